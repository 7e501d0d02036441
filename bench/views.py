"""The leaderboards as a person reads them: short configuration labels, one row per cell.

Used by `bench leaderboard`, the generated tables of README.md and RESULTS.md, and the report,
so a table reads the same wherever it is shown.
"""
from __future__ import annotations

import pandas as pd

from bench.params import labels_of, setting_label
from bench.registry import ATTACKERS, DEFENSES
from bench.results.label_cost import cost_text

PER_ATTACKER_METRICS = ["utility_acc", "attack_acc", "attack_acc_mean", "leakage", "psnr", "ssim", "chance",
                        "clean_acc"]
HEADLINE_COLUMNS = ["dataset", "tasks", "rank", "config", "utility_acc", "utility_ratio", "worst_leakage",
                    "worst_ci95", "worst_attacker", "label_cost", "n_seeds", "listed_apart", "baseline",
                    "baseline_worst_leakage", "baseline_compared_over", "worst_leakage_vs_baseline"]


def per_attacker(agg: pd.DataFrame, specs=None) -> pd.DataFrame:
    """Mean over seeds per configuration, attacker and task; `specs` keeps the rows of those runs
    (and of their identity twins)."""
    view = agg[agg.metric.isin(PER_ATTACKER_METRICS)]
    if specs:
        keep = {(s.defense, s.attacker, s.dataset) for s in specs} | {("identity", s.attacker, s.dataset) for s in specs}
        view = view[[(d, a, ds) in keep for d, a, ds in zip(view.defense, view.attacker, view.dataset)]]
    # Attackers are labelled with their non-default settings too: two settings are two rows, never merged.
    configs = labels_of(view)
    attackers = labels_of(view, "attacker", ATTACKERS)
    view = view.assign(config=[configs[d, p] + setting_label(e, m)
                               for d, p, e, m in zip(view.defense, view.defense_params, view.eval_split, view.max_release)],
                       attacker=[attackers[a, p] for a, p in zip(view.attacker, view.attacker_params)])
    index = ["dataset", "config", "attacker", "attack_task"]
    table = view.pivot_table(index=index, columns="metric", values="mean", aggfunc="first")
    table["n_seeds"] = view.groupby(index)["n"].max()
    return table.reset_index()


def worst(worst_table: pd.DataFrame) -> pd.DataFrame:
    labels = labels_of(worst_table)
    w = worst_table.assign(config=[labels[d, p] for d, p in zip(worst_table.defense, worst_table.defense_params)])
    first = ["dataset", "config"]
    return w[first + [c for c in w.columns if c not in first + ["defense", "defense_params", "defense_label"]]]


def headline(top: pd.DataFrame, ranked_only: bool = False) -> pd.DataFrame:
    """The headline ranking with its CI as one `[low, high]` column; `ranked_only` drops the
    configurations listed apart (below the floor, run against fewer attackers, or left uncalibrated
    attackers by a release cap)."""
    if ranked_only:
        top = top[top["rank"].notna()]
    if "baseline_source" in top:  # a headline written before baselines were borrowed has none
        top = top.assign(baseline=[f"{b} ({s})" if isinstance(s, str) and s and b else b
                                   for b, s in zip(top.baseline, top.baseline_source)])
    if "label_cost" in top:   # a headline written before label costs has none
        top = top.assign(label_cost=[f"{cost_text(c, b)} ({a})" if c == c else ""
                                     for c, b, a in zip(top.label_cost, top.label_cost_bound, top.label_cost_attacker)])
    else:
        top = top.assign(label_cost="", tasks=top.get("tasks", ""))
    top = top.assign(worst_ci95=[f"[{lo:.3f}, {hi:.3f}]" if lo == lo else "" for lo, hi in
                                 zip(top.worst_ci95_low, top.worst_ci95_high)])
    return top[HEADLINE_COLUMNS]


def missing_baselines(top: pd.DataFrame) -> list[str]:
    """One line per dataset whose ranked configurations have no utility-matched baseline, with the command
    that would give them one: the baselines at several strengths against every attacker, as many seeds."""
    ranked = top[top["rank"].notna()]
    baselines = [n for n in DEFENSES.usable()[0] if getattr(DEFENSES.get(n), "baseline", False)]
    lines = []
    for dataset, g in ranked.groupby("dataset", sort=True):
        # identity is what leakage is measured against: it needs no baseline.
        alone = g[(g.baseline.fillna("") == "") & ~g.config.str.startswith("identity")]
        if alone.empty or not baselines:
            continue
        seeds = int(alone.n_seeds.max())
        lines.append(f"no utility-matched baseline for {', '.join(alone.config)} on {dataset}: "
                     f"python -m bench run --dataset {dataset} --defense {','.join(baselines)} --attacker all "
                     f"--seeds 0-{max(seeds - 1, 0)} (add --set NAME.PARAM=V,V,... for strengths at its utility)")
    return lines


def label_cost_summary(top: pd.DataFrame) -> str:
    """In words: which ranked defense costs an attacker more labels than its utility-matched baseline, on
    which task pair and by how much, and why a measured label cost stands beside no baseline's; or which
    label costs exist when none stands beside a baseline's."""
    ranked = top[top["rank"].notna() & ~top.config.str.startswith("identity")]
    measured = ranked[ranked.label_cost.notna()]
    if measured.baseline_label_cost.isna().all():
        held = ", ".join(f"`{c}` on {d} ({t}): {cost_text(v, b)}" for c, d, t, v, b in
                         zip(measured.config, measured.dataset, measured.tasks, measured.label_cost,
                             measured.label_cost_bound))
        return ("No ranked defense's label cost stands beside its utility-matched baseline's yet: a label cost "
                "needs budget curves (`--set adaptive.budget=100,300,1000,3000`) of the defense and of the "
                "baseline. Label costs measured so far: " + (held or "none") + ".")
    lines = []
    for r in measured.itertuples():
        said = (f"- {r.dataset} ({r.tasks}): `{r.config}` costs the cheapest attacker ({r.label_cost_attacker}) "
                f"{cost_text(r.label_cost, r.label_cost_bound)} x the labels it needs on raw images")
        if pd.isna(r.baseline_label_cost):
            why = (f"its utility-matched baseline `{r.baseline}` has no label cost (no budget curves)"
                   if isinstance(r.baseline, str) and r.baseline else "no baseline reaches its utility")
            lines.append(f"{said}; {why}, so it stands beside no baseline.")
            continue
        base = cost_text(r.baseline_label_cost, r.baseline_label_cost_bound)
        # The test of compare: disjoint 95 % intervals (a lower bound counts only by its own lower end).
        ratio = r.label_cost / r.baseline_label_cost
        if r.label_cost_ci95_low > r.baseline_label_cost_ci95_high and not r.baseline_label_cost_bound:
            verdict = f"more than the baseline, {ratio:.1f} x its cost (the 95 % intervals are disjoint)"
        elif r.label_cost_ci95_high < r.baseline_label_cost_ci95_low and not r.label_cost_bound:
            verdict = f"less than the baseline, {ratio:.1f} x its cost (the 95 % intervals are disjoint)"
        else:
            verdict = f"not told apart from the baseline ({ratio:.1f} x its cost; the 95 % intervals overlap)"
        lines.append(f"{said}; its utility-matched baseline `{r.baseline}` costs {base} x: {verdict}.")
    return "\n".join(lines)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub table; a metric that does not apply is an empty cell (tabulate would print "nan")."""
    return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=".4f", missingval="")
