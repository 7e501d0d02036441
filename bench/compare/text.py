"""The report of a comparison as lines of text, at most WIDTH characters each.
"""
from __future__ import annotations

import textwrap

import pandas as pd

from bench.compare.cells import ATTACK_METRICS, DESIGNATED, NO_TEST, SETUP, UTILITY_METRIC, Comparison, verdict
from bench.params import setting_label, table_labels
from bench.registry import ATTACKERS
from bench.results.tables import full_budget

WIDTH = 120


def report(comparison: Comparison, name_a: str, name_b: str) -> list[str]:
    """The comparison as lines of at most WIDTH characters: tables per setup, then what was not compared."""
    m = comparison.matched
    lines = _wrapped(f"A: {name_a}") + _wrapped(f"B: {name_b}")
    lines += _wrapped("Per cell: mean over seeds [95 % CI] n=seeds, B - A, and whether the two CIs are disjoint, "
                      "tested only with two or more seeds on each side (a single seed has no CI: "
                      f"'{NO_TEST}'). Better: higher utility_acc; lower leakage, attack_acc, ssim, psnr "
                      "(the attacker gets less).")
    if m.empty:
        lines += ["", "no cell appears on both sides"]
    else:
        lines += _tables(m)
    lines += _listing("only in A", comparison.only_a)
    lines += _listing("only in B", comparison.only_b)
    lines += _listing("on different data (the data digests of one seed differ, e.g. two `folder` directories)",
                      comparison.different_data, digests=True)
    lines += summary(m)
    lines.append("")
    if comparison.unchecked:
        lines += _wrapped(f"note: the data of {comparison.unchecked} compared cell(s) is unchecked: no run record "
                          "gives its digest on both sides for a common seed (a leaderboard CSV without the runs/ "
                          "directory beside it); two datasets of one name may differ in content")
    n_sig = int(m["significant"].sum()) if len(m) else 0
    n_untested = int((~m["tested"]).sum()) if len(m) else 0
    lines.append(f"{n_sig} of {len(m)} differences exceed the 95 % confidence intervals (disjoint CIs"
                 + (f"; {n_untested} with n = 1 on a side, not tested)" if n_untested else ")"))
    # Only the kinds that occur, so a phrase like "on different data" appears only when some cell is.
    skipped = [f"{n} {what}" for n, what in ((len(comparison.only_a), "only in A"),
                                             (len(comparison.only_b), "only in B"),
                                             (len(comparison.different_data), "on different data")) if n]
    if skipped:
        lines.append("cells not compared (listed above): " + ", ".join(skipped))
    return lines


def summary(m: pd.DataFrame) -> list[str]:
    """Per setup and pair of configurations: the designated model's utility, and the worst case over the
    attackers both sides met (flagged cells, weak attacker or derivable task, do not count), each with its
    verdict by the same test as a cell."""
    if m.empty:
        return []
    m = m.assign(label_a=_labels(m, "_a"), label_b=_labels(m, "_b"), who=_attacker_labels(m))
    lines = ["", "summary (B against A):"]
    for key, g in m.groupby(SETUP + ["label_a", "label_b"], sort=True):
        label_a, label_b = key[-2:]
        pair = f"configuration {label_a}" if label_a == label_b else f"A {label_a}, B {label_b}"
        lines += _wrapped(f"{_setup_text(dict(zip(SETUP, key)))}; {pair}", indent="  ")
        util = g[(g.attacker == DESIGNATED) & (g.metric == UTILITY_METRIC)]
        for r in util.itertuples(index=False):
            lines += _wrapped(f"utility: A {_value(r.mean_a, r.ci95_low_a, r.ci95_high_a, r.n_a)}, "
                              f"B {_value(r.mean_b, r.ci95_low_b, r.ci95_high_b, r.n_b)}, "
                              f"B - A {_number_text(r.diff, signed=True)}: {r.verdict}", indent="    ")
        counted = g[(g.metric == "leakage") & ~(g.weak_attacker_a | g.weak_attacker_b | g.derivable_a | g.derivable_b)
                    & pd.Series(full_budget(g.attacker, g.attacker_params), index=g.index, dtype=bool)]
        if counted.empty:
            lines += _wrapped("worst case: no attacker counted on both sides", indent="    ")
            continue
        a, b = counted.loc[counted.mean_a.idxmax()], counted.loc[counted.mean_b.idxmax()]
        tested = a.n_a > 1 and b.n_b > 1
        disjoint = b.ci95_low_b > a.ci95_high_a or b.ci95_high_b < a.ci95_low_a
        diff = b.mean_b - a.mean_a
        lines += _wrapped(f"worst case over {len(set(counted.who))} attacker(s) both met: "
                          f"A {_value(a.mean_a, a.ci95_low_a, a.ci95_high_a, a.n_a)} ({a.who}), "
                          f"B {_value(b.mean_b, b.ci95_low_b, b.ci95_high_b, b.n_b)} ({b.who}), "
                          f"B - A {_number_text(diff, signed=True)}: "
                          f"{verdict('leakage', diff, tested, tested and disjoint)}", indent="    ")
    return lines


def _tables(m: pd.DataFrame) -> list[str]:
    m = m.assign(label_a=_labels(m, "_a"), label_b=_labels(m, "_b"), who=_attacker_labels(m),
                 shown_a=[_value(*v) for v in zip(m.mean_a, m.ci95_low_a, m.ci95_high_a, m.n_a)],
                 shown_b=[_value(*v) for v in zip(m.mean_b, m.ci95_low_b, m.ci95_high_b, m.n_b)],
                 shown_diff=[_number_text(d, signed=True) for d in m["diff"]],
                 designated_last=m.attacker != DESIGNATED,
                 metric_order=[_metric_order(x) for x in m.metric])
    w_metric = max(6, *map(len, m.metric))
    w_a, w_b = max(1, *map(len, m.shown_a)), max(1, *map(len, m.shown_b))
    w_diff = max(5, *map(len, m.shown_diff))
    head = f"    {'metric':<{w_metric}}  {'A':<{w_a}}  {'B':<{w_b}}  {'B - A':>{w_diff}}  exceeds CIs?"
    lines, setup_shown = [], None
    order = SETUP + ["label_a", "label_b", "designated_last", "who", "attack_task", "metric_order"]
    for key, group in m.sort_values(order, kind="stable").groupby(SETUP + ["label_a", "label_b"], sort=False):
        setup, (label_a, label_b) = _setup_text(dict(zip(SETUP, key))), key[-2:]
        if setup != setup_shown:
            lines += ["", *_wrapped(setup)]
            setup_shown = setup
        if label_a == label_b:
            lines += _wrapped(f"configuration: {label_a}", indent="  ")
        else:
            lines += _wrapped(f"A: {label_a}", indent="  ") + _wrapped(f"B: {label_b}", indent="  ")
        lines.append(head)
        for who, cell in group.groupby(["who", "attack_task"], sort=False):
            lines += _wrapped(f"{who[0]} [{who[1]}]{_flags(cell.iloc[0])}", indent="  ")
            for r in cell.itertuples(index=False):
                lines.append(f"    {r.metric:<{w_metric}}  {r.shown_a:<{w_a}}  {r.shown_b:<{w_b}}  "
                             f"{r.shown_diff:>{w_diff}}  {r.verdict}")
    return lines


def _labels(df: pd.DataFrame, suffix: str) -> list[str]:
    """Each row's configuration on one side, as the leaderboard labels it (`fmd(lam=0.03) [500 released]`)."""
    return [label + setting_label("test", r)
            for label, r in zip(df[f"defense_label{suffix}"], df[f"max_release{suffix}"])]


def _attacker_labels(df: pd.DataFrame) -> list[str]:
    labels = table_labels(((a, p) for a, p in zip(df.attacker, df.attacker_params) if a != DESIGNATED), ATTACKERS)
    return [a if a == DESIGNATED else labels[a, p] for a, p in zip(df.attacker, df.attacker_params)]


def _metric_order(metric: str) -> int:
    order = (UTILITY_METRIC,) + ATTACK_METRICS
    return order.index(metric) if metric in order else len(order)


def _setup_text(setup: dict) -> str:
    split = " [val]" if setup["eval_split"] != "test" else ""
    return (f"{setup['dataset']}{split}: designated task {setup['target_task']}, model {setup['target_arch']}, "
            f"preset {setup['preset']}")


def _flags(row) -> str:
    """Why a cell may not count in the worst case, as the leaderboard flags it (on either side)."""
    flags = []
    if row.weak_attacker_a or row.weak_attacker_b:
        flags.append("weak attacker")
    if row.derivable_a or row.derivable_b:
        flags.append("task derivable from the designated one")
    return f" ({', '.join(flags)})" if flags else ""


def _value(mean: float, low: float, high: float, n: int) -> str:
    if n < 2:
        return f"{_number_text(mean)} n=1"
    return f"{_number_text(mean)} [{_number_text(low)}, {_number_text(high)}] n={n}"


def _number_text(v: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{v:{sign}.3f}" if abs(v) < 1e4 else f"{v:{sign}.3g}"


def _listing(title: str, cells: pd.DataFrame, digests: bool = False) -> list[str]:
    """One line per setup and configuration, naming every cell: nothing left out goes unsaid."""
    if cells.empty:
        return []
    if digests:  # cells kept apart: both configurations, and one seed whose data differ
        cells = cells.assign(label=[f"A {a}, B {b}" for a, b in zip(_labels(cells, "_a"), _labels(cells, "_b"))],
                             detail=[f" (seed {s}: data {x[:12]} vs {y[:12]})"
                                     for s, x, y in zip(cells.seed, cells.digest_a, cells.digest_b)])
    else:
        cells = cells.assign(label=_labels(cells, ""), detail="")
    cells = cells.assign(who=_attacker_labels(cells), designated_last=cells.attacker != DESIGNATED)
    lines = ["", *_wrapped(f"{title}: {len(cells)} cell(s), not compared")]
    order = SETUP + ["label", "designated_last", "who", "attack_task"]
    for key, group in cells.sort_values(order, kind="stable").groupby(SETUP + ["label"], sort=False):
        names = [f"{w} [{t}]{d}" for w, t, d in zip(group.who, group.attack_task, group.detail)]
        lines += _wrapped_items(f"{_setup_text(dict(zip(SETUP, key)))}; {key[-1]}:", names, indent="  ")
    return lines


def _wrapped(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_long_words=True, break_on_hyphens=False)


def _wrapped_items(head: str, items: list[str], indent: str = "") -> list[str]:
    """`head` and `items` comma-separated in lines of at most WIDTH, broken between items, not inside one."""
    lines = _wrapped(head, indent)
    for i, item in enumerate(items):
        item += "," if i < len(items) - 1 else ""
        if len(lines[-1]) + 1 + len(item) <= WIDTH:
            lines[-1] += " " + item
        else:
            lines += _wrapped(item, indent + "    ")
    return lines
