"""The headline ranking: per dataset, the defense configurations a paper would compare.

A configuration is ranked when its utility is at least `floor` x its designated model's
clean accuracy and it was evaluated (ok or not applicable) against every attacker any
configuration of that dataset met: a configuration run against fewer attackers (a
`transfer`-only sweep point) could only look better, so it is listed apart, as is one
below the utility floor. Ranked configurations are ordered by their worst case (over
calibrated attackers of non-derivable tasks, `tables.worst_case`). Beside each, the
utility-matched baseline: the baseline defense configuration (`Defense.baseline`) with
utility at least as high and the lowest worst case, the floor any method should beat.
Utility is matched as a fraction of clean accuracy (`utility_ratio`), not as accuracy: a
configuration with a release cap (`[5000 released]`) is scored on a subset of the test split,
where the same designated model scores differently, so raw accuracies of two configurations
are not on one scale.
A baseline is compared over the attackers both it and the configuration were counted
against (calibrated, non-derivable): one evaluated against every such attacker of the
configuration is preferred; otherwise (CIFAR-10's baselines meet only transfer, adaptive
and inversion) the comparison names its attackers in `baseline_compared_over` and gives
the configuration's own worst case over them in `worst_leakage_vs_baseline`, so two
numbers over different attacker sets are never set side by side unmarked.
Only `test` configurations appear; tuning runs on `val` never do.
"""
from __future__ import annotations

import math

import pandas as pd

from bench.errors import BenchError
from bench.params import config_label, setting_label
from bench.registry import DEFENSES
from bench.results.keys import CONFIG, record_columns

FLOOR = 0.95
COLUMNS = ["dataset", "rank", "config", "utility_acc", "utility_ratio", "worst_leakage", "worst_ci95_low",
           "worst_ci95_high", "worst_attacker", "n_seeds", "listed_apart", "baseline", "baseline_utility_ratio",
           "baseline_worst_leakage", "baseline_compared_over", "worst_leakage_vs_baseline", "utility_floor"]


def headline(worst: pd.DataFrame, agg: pd.DataFrame, runs: list[dict], floor: float = FLOOR) -> pd.DataFrame:
    if not 0 < floor <= 1:
        raise BenchError(f"utility floor {floor}: must be in (0, 1]")
    attempted: dict[tuple, set] = {}
    for r in runs:
        if r["status"] in ("ok", "not_applicable"):
            row = record_columns(r)
            attempted.setdefault(tuple(row[c] for c in CONFIG), set()).add(row["attacker"])
    clean = agg[agg.metric == "clean_acc"].groupby(CONFIG, dropna=False)["mean"].mean()
    counted = _counted_leakage(agg)
    rows = []
    for w in worst[worst.eval_split == "test"].itertuples(index=False):
        key = tuple(getattr(w, c) for c in CONFIG)
        ratio = w.utility_acc / clean[key] if key in clean.index and clean[key] > 0 else math.nan
        rows.append({"key": key, "dataset": w.dataset, "defense": w.defense,
                     "config": config_label(w.defense, w.defense_params) + setting_label(w.eval_split, w.max_release),
                     "utility_acc": w.utility_acc, "utility_ratio": ratio, "worst_leakage": w.worst_leakage,
                     "worst_ci95_low": w.worst_ci95_low, "worst_ci95_high": w.worst_ci95_high,
                     "worst_attacker": w.worst_attacker, "n_seeds": w.n_seeds,
                     "attackers": attempted.get(key, set()), "leaks": counted.get(key, {})})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.DataFrame(rows)
    out = []
    for dataset, g in table.groupby("dataset", sort=True):
        everyone = set().union(*g.attackers)
        g = g.assign(listed_apart=[_apart(a, everyone, r, floor) for a, r in zip(g.attackers, g.utility_ratio)])
        baselines = g[[_is_baseline(d) for d in g.defense]]
        ranked = g[g.listed_apart == ""].sort_values(["worst_leakage", "config"], na_position="last")
        ranked = ranked.assign(rank=range(1, len(ranked) + 1))
        apart = g[g.listed_apart != ""].sort_values(["worst_leakage", "config"], na_position="last")
        for part in (ranked, apart):
            for r in part.to_dict("records"):
                out.append({**r, **_matched_baseline(r, baselines), "utility_floor": floor})
    return pd.DataFrame(out)[COLUMNS].astype({"rank": "Int64"})


def _counted_leakage(agg: pd.DataFrame) -> dict[tuple, dict[str, float]]:
    """Per configuration: {attacker: its highest mean leakage} over the rows its worst case counts."""
    leaks = agg[(agg.metric == "leakage") & ~agg.weak_attacker & ~agg.derivable]
    return {key: g.groupby("attacker")["mean"].max().to_dict() for key, g in leaks.groupby(CONFIG, dropna=False)}


def _matched_baseline(row: dict, baselines: pd.DataFrame) -> dict:
    """The baseline columns of `row`: among baselines at a utility ratio >= its own, the one compared
    over the most of its counted attackers, then with the lowest worst case over them."""
    none = {"baseline": "", "baseline_utility_ratio": math.nan, "baseline_worst_leakage": math.nan,
            "baseline_compared_over": "", "worst_leakage_vs_baseline": math.nan}
    own = row["leaks"]
    candidates = []
    for b in baselines.to_dict("records"):
        common = sorted(set(own) & set(b["leaks"]))
        if b["config"] == row["config"] or not common or not b["utility_ratio"] >= row["utility_ratio"]:
            continue
        candidates.append((-len(common), max(b["leaks"][a] for a in common), b["config"], common, b))
    if not candidates:
        return none
    _, worst, config, common, b = min(candidates, key=lambda c: c[:3])
    return {"baseline": config, "baseline_utility_ratio": b["utility_ratio"], "baseline_worst_leakage": worst,
            "baseline_compared_over": "" if len(common) == len(own) else ", ".join(common),
            "worst_leakage_vs_baseline": max(own[a] for a in common)}


def _apart(attackers: set, everyone: set, ratio: float, floor: float) -> str:
    """Why a configuration is not ranked with the others ('' when it is)."""
    if not everyone <= attackers:
        return "fewer attackers (no " + ", ".join(sorted(everyone - attackers)) + ")"
    if not ratio >= floor:
        return f"utility below {floor:g} x clean"
    return ""


def _is_baseline(defense: str) -> bool:
    try:
        return bool(getattr(DEFENSES.get(defense), "baseline", False))
    except BenchError:  # a plugin no longer installed or broken: not known to be a baseline
        return False
