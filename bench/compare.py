"""`bench compare`: did it help? Two leaderboards, or two configurations of one, cell by cell.

A *cell* is one attacker (with its settings) on one attack task, on one dataset under one setup
(designated task, model architecture, preset, evaluation split). The designated model's
utility is a cell of its own, so a comparison shows what a defense costs next to what it hides.

Each side is a long-format leaderboard: a `leaderboard.csv`, or the run records of a results
directory. Without a selection the two sides are matched configuration by configuration (a
rerun against the committed results); with `--a`/`--b` each side is narrowed to one
configuration per dataset and the two are matched cell by cell. For every matched cell and
metric the report gives both means with their 95 % CIs and seed counts, the difference and
whether the CIs are disjoint; cells on one side only are listed, never dropped.

Datasets are told apart by content, not by name (two `folder` directories are both `folder`):
a run record holds the digest of the data its seed used (`data_digest`), and two cells whose
runs of one seed used different data are kept apart and listed. A leaderboard CSV carries no
digest: it is read from the records in the `runs/` directory beside the CSV, where there is one.
"""
from __future__ import annotations

import json
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.results import (GROUP, param_text, aggregate, changed_params, config_label, load_runs, long_table,
                           read_long, read_run, run_path, setting_label, table_labels)

# What a side's configuration is (what `--a`/`--b` select); the rest of a leaderboard group is the cell.
CONFIG_COLUMNS = ["defense", "defense_params", "max_release"]
CELL = [c for c in GROUP if c not in CONFIG_COLUMNS]
# The dataset and setup a cell belongs to: the heading its rows are printed under.
SETUP = ["dataset", "target_task", "target_arch", "preset", "eval_split"]
# What `--a`/`--b` choose from, per dataset: a configuration as the leaderboard labels it.
SELECTABLE = ["dataset", "defense", "defense_params", "eval_split", "max_release"]
DESIGNATED = "designated model"
ATTACK_METRICS = ("leakage", "attack_acc", "ssim", "psnr")  # in the order they are printed
UTILITY_METRIC = "utility_acc"
HIGHER_IS_BETTER = {UTILITY_METRIC}  # for the others, lower means the attacker gets less
WIDTH = 120


# --- the two sides --------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    name: str            # how the report calls it: the file or directory it was read from
    long: pd.DataFrame   # a long table (results.LONG_COLUMNS) plus `data_digest`: None where no record says


def read_leaderboard(path: Path) -> Side:
    """A leaderboard CSV (`read_long`), with the data digests of the records beside it in `runs/`."""
    path = Path(path)
    long = read_long(path)
    digests = _digests_beside(path, set(long["run_id"]))
    return Side(str(path), long.assign(data_digest=[digests.get(i) for i in long["run_id"]]))


def _digests_beside(path: Path, run_ids: set[str]) -> dict[str, str | None]:
    """run_id -> data digest, for the runs of `run_ids` recorded in the `runs/` directory beside `path`."""
    results_dir = path.parent
    runs_dir = results_dir / "runs"
    if not runs_dir.is_dir():
        return {}
    try:
        # Only names listed there are read: a run_id from the CSV never becomes a path of its own.
        present = {p.name for p in runs_dir.iterdir()}
    except OSError as e:
        raise BenchError(f"cannot list {runs_dir}: {e.strerror or e}") from None
    return {i: _digest_of(read_run(results_dir, i), run_path(results_dir, i))
            for i in sorted(run_ids) if f"{i}.json" in present}


def read_results_dir(results_dir: Path) -> Side:
    """The runs recorded in `results_dir/runs` as a long table, with the data digest of each."""
    results_dir = Path(results_dir)
    if not (results_dir / "runs").is_dir():
        raise BenchError(f"no runs in {results_dir}/runs; run `python -m bench run` first, or give leaderboard CSVs")
    runs = load_runs(results_dir)
    digests = {r["run_id"]: _digest_of(r, run_path(results_dir, r["run_id"])) for r in runs}
    long = long_table(runs)
    return Side(str(results_dir), long.assign(data_digest=[digests[i] for i in long["run_id"]]))


def _digest_of(record: dict, path: Path) -> str | None:
    digest = record.get("data_digest")
    if digest is not None and not isinstance(digest, str):
        raise BenchError(f"corrupt result file {path}: data_digest is {digest!r}, not a sha256 digest; "
                         "move it out of the runs/ directory or delete it")
    return digest


def only_dataset(side: Side, dataset: str) -> Side:
    return Side(side.name, side.long[side.long["dataset"] == dataset])


# --- choosing a configuration (--a, --b) ----------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What `--a`/`--b` ask for: a defense, and optionally some of its hyperparameters and its setting."""
    text: str
    option: str                    # `--a` or `--b`, for messages
    defense: str
    params: dict[str, str] | None  # None: any configuration (a bare name); {}: the defaults (`name()`)
    setting: str | None            # setting_label without blanks, e.g. `[500released]`; None: any


_SELECTION = re.compile(r"\s*([^\s()\[\]]+)\s*(?:\((.*)\))?\s*((?:\[[^\]]*\]\s*)*)")
EXAMPLES = "e.g. fmd, fmd(lam=0.03), vfc() for its defaults, identity [500 released]"


def parse_selection(text: str, option: str) -> Selection:
    """`name`, `name()`, `name(param=value, ...)`, each optionally followed by a setting such as `[val]`."""
    match = _SELECTION.fullmatch(text)
    if match is None:
        raise BenchError(f"{option} {text!r} is no defense or configuration label ({EXAMPLES})")
    name, inside, setting = match.groups()
    params = None
    if inside is not None:
        params = {}
        for part in filter(None, (p.strip() for p in inside.split(","))):
            key, eq, value = (s.strip() for s in part.partition("="))
            if not (eq and key and value):
                raise BenchError(f"{option} {text!r}: {part!r} is not param=value ({EXAMPLES})")
            params[key] = value
    return Selection(text, option, name, params, _squash(setting) or None)


def _squash(text: str) -> str:
    """`text` without blanks: a label typed `fmd(lam=0.03,label_source=gt)` is the one printed with spaces."""
    return "".join(text.split())


def configurations(long: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, each configuration of `long` (SELECTABLE), its `label` and the `selector` that picks it alone.

    The label is the leaderboard's (config_label and setting_label); a configuration with every
    hyperparameter at its default is selected alone by `name()`, as the bare name means all of them.
    """
    configs = long[SELECTABLE].drop_duplicates().sort_values(SELECTABLE, ignore_index=True)
    unique = table_labels(zip(configs.defense, configs.defense_params))
    labels = [unique[d, p] + setting_label(e, m)
              for d, p, e, m in zip(configs.defense, configs.defense_params, configs.eval_split, configs.max_release)]
    selectors = [label if label != d else f"{d}()" for label, d in zip(labels, configs.defense)]
    return configs.assign(label=labels, selector=selectors)


def select(side: Side, selection: Selection) -> Side:
    """`side` narrowed to the configuration `selection` names on each dataset, or a BenchError listing the choices.

    On a dataset where several configurations match, one whose selector is exactly the text
    given is taken; otherwise the selection is ambiguous there and the error lists the matches.
    """
    configs = configurations(side.long)
    hits = _where(configs, [_matches(selection, row) for row in configs.itertuples(index=False)])
    if hits.empty:
        raise _no_match(side, selection, configs)
    chosen = []
    for dataset, found in hits.groupby("dataset", sort=True):
        if len(found) > 1:
            exact = found[found.selector.map(_squash) == _squash(selection.text)]
            if len(exact) != 1:
                other_datasets = configs.dataset.nunique() > 1
                raise BenchError(f"{selection.option} {selection.text!r} matches {len(found)} configurations on "
                                 f"{dataset} in {side.name}; give one of these labels: {'; '.join(found.selector)}"
                                 + (" (or leave other datasets out with --dataset)" if other_datasets else ""))
            found = exact
        chosen.append(found)
    wanted = set(pd.concat(chosen)[SELECTABLE].itertuples(index=False, name=None))
    keep = [key in wanted for key in side.long[SELECTABLE].itertuples(index=False, name=None)]
    return Side(side.name, _where(side.long, keep))


def _where(df: pd.DataFrame, keep: list[bool]) -> pd.DataFrame:
    """The rows of `df` where `keep` is true (`df[[]]` would select no columns, not no rows)."""
    return df.loc[np.asarray(keep, dtype=bool)]


def _matches(selection: Selection, config) -> bool:
    if config.defense != selection.defense:
        return False
    if selection.setting is not None and _squash(setting_label(config.eval_split, config.max_release)) \
            != selection.setting:
        return False
    if selection.params is None:
        return True
    if not selection.params:  # `name()`: every hyperparameter at its default
        return not changed_params(config.defense, config.defense_params)
    params = json.loads(config.defense_params) if config.defense_params else {}
    scales = _param_scales(config.defense)
    return all(k in params and _same_value(params[k], v, scales.get(k)) for k, v in selection.params.items())


def _param_scales(defense: str) -> dict:
    from bench.registry import DEFENSES

    try:
        return getattr(DEFENSES.get(defense), "param_scales", {})
    except BenchError:  # a plugin no longer installed: its values are matched as written
        return {}


def _same_value(value, text: str, scale: int | None) -> bool:
    """Whether `text` (as typed, or as a label prints it: `16/255`, `0.0314`, `cnn+resnet`) is `value`."""
    if text in (param_text(value, scale), str(value), json.dumps(value)):
        return True
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        number = _number(text)
        return number is not None and math.isclose(value, number, rel_tol=1e-9, abs_tol=1e-12)
    return False


def _number(text: str) -> float | None:
    """`text` as a number (`0.03`, `8/255`), or None when it is none: then it is compared as text only."""
    numerator, slash, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(numerator)
    except (ValueError, ZeroDivisionError):
        return None


def _no_match(side: Side, selection: Selection, configs: pd.DataFrame) -> BenchError:
    own = configs[configs.defense == selection.defense]
    where = f"{selection.option} {selection.text!r} matches no configuration in {side.name}"
    if own.empty:
        defenses = ", ".join(sorted(set(configs.defense))) or "(none)"
        return BenchError(f"{where}: no run of defense {selection.defense!r}; valid choices: {defenses} "
                          f"(or a configuration label, {EXAMPLES})")
    known = set().union(*(json.loads(p or "{}") for p in own.defense_params))
    unknown = sorted(set(selection.params or {}) - known)
    if unknown:
        where += (f" ({selection.defense} has no hyperparameter {', '.join(unknown)}; "
                  f"its hyperparameters: {', '.join(sorted(known))})")
    return BenchError(f"{where}; valid choices: {'; '.join(dict.fromkeys(own.selector))}")


# --- matching the cells of two sides ---------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    matched: pd.DataFrame         # per matched cell and metric: CELL, the two configurations, stats, diff, verdict
    only_a: pd.DataFrame          # cells of A with no match in B (CELL, the configuration, n)
    only_b: pd.DataFrame
    different_data: pd.DataFrame  # matched cells whose runs of one seed used different data: not compared
    unchecked: int                # compared cells no digest could vouch for (no record, or no seed in common)


@dataclass(frozen=True)
class _Cells:
    """One side, cell by cell: `cells` (one row each, with an `id`), `stats` and `digests` by that id."""
    cells: pd.DataFrame    # CELL + CONFIG_COLUMNS + config, id, n, weak_attacker, derivable
    stats: pd.DataFrame    # id, metric, mean, ci95_low, ci95_high, n
    digests: pd.DataFrame  # id, seed, digest ("" when no record says)


def compare_sides(a: pd.DataFrame, b: pd.DataFrame, same_configuration: bool) -> Comparison:
    """Cell by cell, the long tables `a` and `b` (with `data_digest` where known).

    `same_configuration`: match a cell only with the same configuration on the other side (two
    leaderboards); else any configuration (each side holds one per dataset, from `select`).
    """
    side_a, side_b = _cells(a), _cells(b)
    on = CELL + (["config"] if same_configuration else [])
    pairs = side_a.cells.merge(side_b.cells, on=on, how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = _one_side(pairs[pairs["_merge"] == "left_only"], "_a")
    only_b = _one_side(pairs[pairs["_merge"] == "right_only"], "_b")
    both = pairs[pairs["_merge"] == "both"].drop(columns="_merge")
    both = both.astype({"id_a": int, "id_b": int})

    seeds = (both[["id_a", "id_b"]]
             .merge(side_a.digests.rename(columns={"id": "id_a", "digest": "digest_a"}), on="id_a")
             .merge(side_b.digests.rename(columns={"id": "id_b", "digest": "digest_b"}), on=["id_b", "seed"]))
    known = (seeds.digest_a != "") & (seeds.digest_b != "")
    conflicts = seeds[known & (seeds.digest_a != seeds.digest_b)].drop_duplicates(["id_a", "id_b"])
    apart = both.merge(conflicts, on=["id_a", "id_b"])
    kept_apart = set(zip(apart.id_a, apart.id_b))
    compared = _where(both, [pair not in kept_apart for pair in zip(both.id_a, both.id_b)])
    vouched = set(zip(seeds[known].id_a, seeds[known].id_b))
    unchecked = sum((i, j) not in vouched for i, j in zip(compared.id_a, compared.id_b))
    return Comparison(_metric_table(compared, side_a, side_b), only_a, only_b, apart, unchecked)


def _cells(long: pd.DataFrame) -> _Cells:
    rows = cell_rows(long)
    agg = aggregate(rows)
    if agg.empty:
        cells = pd.DataFrame(columns=CELL + CONFIG_COLUMNS + ["config", "id", "n", "weak_attacker", "derivable"])
        return _Cells(cells, pd.DataFrame(columns=["id", "metric", "mean", "ci95_low", "ci95_high", "n"]),
                      pd.DataFrame(columns=["id", "seed", "digest"]))
    agg = _with_config_key(agg)
    cells = (agg.groupby(GROUP + ["config"], sort=True, dropna=False)
             .agg(n=("n", "max"), weak_attacker=("weak_attacker", "any"), derivable=("derivable", "any"))
             .reset_index())
    cells["id"] = range(len(cells))
    stats = agg.merge(cells[GROUP + ["id"]], on=GROUP)[["id", "metric", "mean", "ci95_low", "ci95_high", "n"]]
    digests = (rows.groupby(GROUP + ["seed"], sort=False, dropna=False)["data_digest"].agg(_joined).reset_index()
               .rename(columns={"data_digest": "digest"}).merge(cells[GROUP + ["id"]], on=GROUP))
    return _Cells(cells, stats, digests[["id", "seed", "digest"]])


def cell_rows(long: pd.DataFrame) -> pd.DataFrame:
    """The rows a comparison reads: the attackers' metrics, and the designated model's utility as a cell.

    Every run of a configuration reports the utility of the one designated model it attacked;
    per seed those are averaged into one value of the cell `designated model`.
    """
    long = long if "data_digest" in long.columns else long.assign(data_digest=None)
    attacks = long[long.metric.isin(ATTACK_METRICS)]
    utility = long[long.metric == UTILITY_METRIC]
    if utility.empty:
        return attacks
    keys = CONFIG_COLUMNS + SETUP + ["seed"]
    per_seed = (utility.groupby(keys, sort=False, dropna=False)
                .agg(value=("value", "mean"), data_digest=("data_digest", _joined), run_id=("run_id", "first"))
                .reset_index())
    designated = per_seed.assign(attacker=DESIGNATED, attacker_params="", knowledge="",
                                 attack_task=per_seed.target_task, metric=UTILITY_METRIC, weak_attacker=False,
                                 derivable=False)
    return pd.concat([attacks, designated[attacks.columns]], ignore_index=True)


def _joined(digests) -> str:
    """The digests recorded for one seed, as one text ("" when no record says): equal only for the same data."""
    return "|".join(sorted({d for d in digests if isinstance(d, str) and d}))


def _with_config_key(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(config=[json.dumps([d, p, int(m)]) for d, p, m in
                             zip(df.defense, df.defense_params, df.max_release)])


def _one_side(pairs: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """The cells of one side in `pairs` (an outer merge), with that side's columns under their own names."""
    own = {f"{c}{suffix}": c for c in CONFIG_COLUMNS + ["n", "weak_attacker", "derivable"]}
    return pairs.rename(columns=own)[CELL + list(own.values())].reset_index(drop=True)


def _metric_table(compared: pd.DataFrame, side_a: _Cells, side_b: _Cells) -> pd.DataFrame:
    stats = ["mean", "ci95_low", "ci95_high", "n"]
    keep = CELL + [f"{c}{s}" for s in ("_a", "_b") for c in CONFIG_COLUMNS + ["weak_attacker", "derivable"]]
    m = (compared[keep + ["id_a", "id_b"]]
         .merge(side_a.stats.rename(columns={"id": "id_a", **{c: f"{c}_a" for c in stats}}), on="id_a")
         .merge(side_b.stats.rename(columns={"id": "id_b", **{c: f"{c}_b" for c in stats}}), on=["id_b", "metric"]))
    m["diff"] = m["mean_b"] - m["mean_a"]
    m["has_ci"] = (m["n_a"] > 1) | (m["n_b"] > 1)
    disjoint = (m["ci95_low_b"] > m["ci95_high_a"]) | (m["ci95_high_b"] < m["ci95_low_a"])
    # Two single seeds have no interval at all: their difference cannot be called significant.
    m["significant"] = disjoint & m["has_ci"]
    m["verdict"] = [_verdict(metric, diff, has_ci, significant)
                    for metric, diff, has_ci, significant in zip(m.metric, m["diff"], m.has_ci, m.significant)]
    return m.drop(columns=["id_a", "id_b"]).reset_index(drop=True)


def _verdict(metric: str, diff: float, has_ci: bool, significant: bool) -> str:
    if not has_ci:
        return "no CI (n=1)"
    if not significant:
        return "no"
    b_better = (diff > 0) == (metric in HIGHER_IS_BETTER)
    return f"yes, {'B' if b_better else 'A'} better"


# --- the report ------------------------------------------------------------------------------
def report(comparison: Comparison, name_a: str, name_b: str) -> list[str]:
    """The comparison as lines of at most WIDTH characters: tables per setup, then what was not compared."""
    m = comparison.matched
    lines = _wrapped(f"A: {name_a}") + _wrapped(f"B: {name_b}")
    lines += _wrapped("Per cell: mean over seeds [95 % CI] n=seeds, B - A, and whether the two CIs are disjoint "
                      "(with n = 1 on both sides there is no CI). Better: higher utility_acc; lower leakage, "
                      "attack_acc, ssim, psnr (the attacker gets less).")
    if m.empty:
        lines += ["", "no cell appears on both sides"]
    else:
        lines += _tables(m)
    lines += _listing("only in A", comparison.only_a)
    lines += _listing("only in B", comparison.only_b)
    lines += _listing("on different data (the data digests of one seed differ, e.g. two `folder` directories)",
                      comparison.different_data, digests=True)
    lines.append("")
    if comparison.unchecked:
        lines += _wrapped(f"note: the data of {comparison.unchecked} compared cell(s) is unchecked: no run record "
                          "gives its digest on both sides for a common seed (a leaderboard CSV without the runs/ "
                          "directory beside it); two datasets of one name may differ in content")
    n_sig = int(m["significant"].sum()) if len(m) else 0
    lines.append(f"{n_sig} of {len(m)} differences exceed the 95 % confidence intervals (disjoint CIs; "
                 "none with n = 1 on both sides)")
    skipped = (len(comparison.only_a), len(comparison.only_b), len(comparison.different_data))
    if any(skipped):
        lines.append("not compared: {} cell(s) only in A, {} only in B, {} on different data (listed above)"
                     .format(*skipped))
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
    return [config_label(d, p) + setting_label("test", r) for d, p, r in
            zip(df[f"defense{suffix}"], df[f"defense_params{suffix}"], df[f"max_release{suffix}"])]


def _attacker_labels(df: pd.DataFrame) -> list[str]:
    from bench.registry import ATTACKERS

    return [a if a == DESIGNATED else config_label(a, p, ATTACKERS) for a, p in zip(df.attacker, df.attacker_params)]


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


# --- the command -----------------------------------------------------------------------------
def compare_command(leaderboards: list[Path], results_dir: Path | None, a: str | None, b: str | None,
                    dataset: str | None) -> list[str]:
    """The report of `bench compare`, from its arguments (see `bench.cli`), or a BenchError naming what is wrong.

    Two leaderboards, no selection: the same configurations on both. With `--a` and `--b`: that
    configuration of A (the first leaderboard, the only one, or the results directory) against
    that of B (the second leaderboard, or the same source).
    """
    if (a is None) != (b is None):
        raise BenchError(f"{'--a' if a is not None else '--b'} needs {'--b' if a is not None else '--a'}: "
                         "give both configurations to compare (or neither, to compare two leaderboards)")
    if len(leaderboards) > 2:
        raise BenchError(f"{len(leaderboards)} leaderboards given; compare takes two, or one with --a and --b")
    if leaderboards and results_dir is not None:
        raise BenchError("give leaderboard CSVs or --results-dir, not both")
    if a is None and len(leaderboards) < 2:
        raise BenchError("give two leaderboards (bench compare A.csv B.csv), or --a and --b to compare two "
                         "configurations of one results directory or leaderboard")
    selections = (parse_selection(a, "--a"), parse_selection(b, "--b")) if a is not None else None
    if leaderboards:
        side_a = read_leaderboard(leaderboards[0])
        side_b = read_leaderboard(leaderboards[1]) if len(leaderboards) == 2 else side_a
    else:
        side_a = side_b = read_results_dir(results_dir if results_dir is not None else Path("results/local"))
    if dataset is not None:
        present = set(side_a.long["dataset"]) | set(side_b.long["dataset"])
        if dataset not in present:
            raise BenchError(f"--dataset {dataset!r}: no run on it; valid choices: {', '.join(sorted(present))}")
        side_a, side_b = only_dataset(side_a, dataset), only_dataset(side_b, dataset)
    if selections is not None:
        side_a, side_b = select(side_a, selections[0]), select(side_b, selections[1])
    comparison = compare_sides(side_a.long, side_b.long, same_configuration=selections is None)
    name_a = side_a.name + (f", {selections[0].text}" if selections else "")
    name_b = side_b.name + (f", {selections[1].text}" if selections else "")
    lines = report(comparison, name_a, name_b)
    if not side_a.long.empty and side_a.long.equals(side_b.long):
        lines.insert(0, "note: A and B are the same runs (a configuration or leaderboard compared with itself): "
                        "every difference is 0 by construction")
    return lines
