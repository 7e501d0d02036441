"""The headline ranking: per dataset and task pair, the defense configurations a paper would compare.

A configuration is ranked when its utility is at least `floor` x its designated model's
clean accuracy and it was evaluated (ok or not applicable) against every attacker any
configuration of that dataset met: a configuration run against fewer attackers (a
`transfer`-only sweep point) could only look better, so it is listed apart, as is one whose
release cap leaves uncalibrated an attacker that the uncapped identity counts (its worst case is
over fewer attackers too), and one below the utility floor. Ranked configurations are ordered
by their worst case (over calibrated attackers of non-derivable tasks, `tables.worst_case`). Beside each, the
utility-matched baseline: the baseline defense configuration (`Defense.baseline`) with
utility at least as high and the lowest worst case, the floor any method should beat.
Utility is matched as a fraction of clean accuracy (`utility_ratio`), not as accuracy: a
configuration with a release cap (`[5000 released]`) is scored on a subset of the test split,
where the same designated model scores differently, so raw accuracies of two configurations
are not on one scale.
A baseline is compared over the attackers both it and the configuration were counted
against (calibrated, non-derivable): one evaluated against every such attacker of the
configuration is preferred; otherwise (CIFAR-10's `class -> vehicle` baselines other than
noise(sigma=0.02) and jpeg(quality=75) meet transfer, adaptive and inversion at most) the
comparison names its attackers in `baseline_compared_over` and gives the configuration's own
worst case over them in `worst_leakage_vs_baseline`, so two numbers over different attacker sets
are never set side by side unmarked.
Only `test` configurations appear; tuning runs on `val` never do.
Beside each configuration stands its label cost (`label_cost`): the smallest over its calibrated
attackers of non-derivable tasks, the attacker's cheapest route. The ranking stays by worst-case
leakage, which every configuration has at its full attacker budget; a label cost needs budget
curves, which a sweep may not have run, and ranking by a number some rows lack would rank by
what was run rather than by what the defense does.
A baseline is matched within the configuration's dataset and setting (designated task, model,
preset). Where a results dir holds no baseline of its own there (a user's dir with only their
defense), one from another results dir on the same data may stand in (`other_baselines`,
chosen by `bench.results.leaderboards`), named as such in `baseline_source`.
"""
from __future__ import annotations

import math

import pandas as pd

from bench.errors import BenchError
from bench.params import labels_of, setting_label
from bench.registry import DEFENSES
from bench.results.keys import CONFIG, record_columns
from bench.results.label_cost import cheapest
from bench.results.tables import counted

FLOOR = 0.95
COLUMNS = ["dataset", "tasks", "rank", "config", "defense", "utility_acc", "utility_ratio", "worst_leakage",
           "worst_ci95_low", "worst_ci95_high", "worst_attacker", "label_cost", "label_cost_ci95_low",
           "label_cost_ci95_high", "label_cost_bound", "label_cost_attacker", "n_seeds",
           "listed_apart", "baseline", "baseline_source",
           "baseline_utility_ratio", "baseline_worst_leakage", "baseline_compared_over", "worst_leakage_vs_baseline",
           "baseline_label_cost", "baseline_label_cost_ci95_low", "baseline_label_cost_ci95_high",
           "baseline_label_cost_bound", "utility_floor"]


# What a baseline taken from another results dir must share with the configurations it stands beside.
SETTING = ["dataset", "target_task", "target_arch", "preset"]


def headline(worst: pd.DataFrame, agg: pd.DataFrame, runs: list[dict], floor: float = FLOOR,
             other_baselines: pd.DataFrame | None = None, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ranking (see the module docstring). `other_baselines`: baseline configurations of another
    results dir on the same data (`configurations` of it, with a `source` column), matched on a dataset
    and setting where these results hold no baseline of their own; their source is named in
    `baseline_source` ("" for a baseline of these results). `costs`: the label costs
    (`label_cost.label_costs`); beside each configuration stands its smallest over counted attackers."""
    if not 0 < floor <= 1:
        raise BenchError(f"utility floor {floor}: must be in (0, 1]")
    table = configurations(worst, agg, runs)
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    routes = cheapest(costs) if costs is not None and not costs.empty else {}
    none = {"label_cost": math.nan, "label_cost_ci95_low": math.nan, "label_cost_ci95_high": math.nan,
            "label_cost_bound": False, "label_cost_attacker": ""}
    table = table.assign(**{k: [routes.get(key, none)[k] for key in table.key] for k in none})
    out = []
    # A task pair is a setting of its own: configurations are ranked among those of one designated task.
    for _, g in table.groupby(["dataset", "target_task"], sort=True):
        everyone = set().union(*g.attackers)
        g = g.assign(listed_apart=[_apart(a, everyone, r, floor, u)
                                   for a, r, u in zip(g.attackers, g.utility_ratio, _uncalibrated(g))])
        baselines = g[[is_baseline(d) for d in g.defense]].assign(source="")
        ranked = g[g.listed_apart == ""].sort_values(["worst_leakage", "config"], na_position="last")
        ranked = ranked.assign(rank=range(1, len(ranked) + 1))
        apart = g[g.listed_apart != ""].sort_values(["worst_leakage", "config"], na_position="last")
        for part in (ranked, apart):
            for r in part.to_dict("records"):
                candidates = baselines[_same_setting(baselines, r)]
                if candidates.empty and other_baselines is not None and not other_baselines.empty:
                    candidates = other_baselines[_same_setting(other_baselines, r)]
                out.append({**r, **_matched_baseline(r, candidates), "utility_floor": floor})
    return pd.DataFrame(out)[COLUMNS].astype({"rank": "Int64"})


def _same_setting(rows: pd.DataFrame, r: dict) -> list[bool]:
    return [all(getattr(b, c) == r[c] for c in SETTING) for b in rows.itertuples(index=False)]


def configurations(worst: pd.DataFrame, agg: pd.DataFrame, runs: list[dict]) -> pd.DataFrame:
    """One row per defense configuration scored on test: its label, utility ratio, worst case, the attackers
    it was evaluated against (`attackers`), those with a leakage measured (`measured`) and the leakage its
    worst case counts per attacker (`leaks`)."""
    attempted: dict[tuple, set] = {}
    private: dict[tuple, set] = {}
    for r in runs:
        if r["status"] in ("ok", "not_applicable"):
            row = record_columns(r)
            key = tuple(row[c] for c in CONFIG)
            attempted.setdefault(key, set()).add(row["attacker"])
            if row["attack_task"] != row["target_task"]:
                private.setdefault(key, set()).add(row["attack_task"])
    clean = agg[agg.metric == "clean_acc"].groupby(CONFIG, dropna=False)["mean"].mean()
    counted = _counted_leakage(agg)
    measured = {key: set(g.attacker) for key, g in agg[agg.metric == "leakage"].groupby(CONFIG, dropna=False)}
    rows = []
    labels = labels_of(worst)
    for w in worst[worst.eval_split == "test"].itertuples(index=False):
        key = tuple(getattr(w, c) for c in CONFIG)
        ratio = w.utility_acc / clean[key] if key in clean.index and clean[key] > 0 else math.nan
        tasks = w.target_task + (f" -> {', '.join(sorted(private[key]))}" if key in private else "")
        rows.append({"key": key, "dataset": w.dataset, "tasks": tasks, "defense": w.defense,
                     "config": labels[w.defense, w.defense_params] + setting_label(w.eval_split, w.max_release),
                     "utility_acc": w.utility_acc, "utility_ratio": ratio, "worst_leakage": w.worst_leakage,
                     "worst_ci95_low": w.worst_ci95_low, "worst_ci95_high": w.worst_ci95_high,
                     "worst_attacker": w.worst_attacker, "n_seeds": w.n_seeds,
                     "attackers": attempted.get(key, set()), "leaks": counted.get(key, {}),
                     "measured": measured.get(key, set()), "max_release": w.max_release,
                     **{c: getattr(w, c) for c in SETTING if c != "dataset"}})
    return pd.DataFrame(rows, columns=["key", "dataset", "tasks", "defense", "config", "utility_acc", "utility_ratio",
                                       "worst_leakage", "worst_ci95_low", "worst_ci95_high", "worst_attacker",
                                       "n_seeds", "attackers", "leaks", "measured", "max_release", *SETTING[1:]])


def _counted_leakage(agg: pd.DataFrame) -> dict[tuple, dict[str, float]]:
    """Per configuration: {attacker: its highest mean leakage} over the rows its worst case counts."""
    leaks = agg[counted(agg)] if len(agg) else agg
    return {key: g.groupby("attacker")["mean"].max().to_dict() for key, g in leaks.groupby(CONFIG, dropna=False)}


def _matched_baseline(row: dict, baselines: pd.DataFrame) -> dict:
    """The baseline columns of `row`: among baselines at a utility ratio >= its own, the one compared
    over the most of its counted attackers, then with the lowest worst case over them."""
    none = {"baseline": "", "baseline_source": "", "baseline_utility_ratio": math.nan,
            "baseline_worst_leakage": math.nan, "baseline_compared_over": "", "worst_leakage_vs_baseline": math.nan,
            "baseline_label_cost": math.nan, "baseline_label_cost_ci95_low": math.nan,
            "baseline_label_cost_ci95_high": math.nan, "baseline_label_cost_bound": False}
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
    return {"baseline": config, "baseline_source": b["source"], "baseline_utility_ratio": b["utility_ratio"],
            "baseline_worst_leakage": worst,
            "baseline_compared_over": "" if len(common) == len(own) else ", ".join(common),
            "worst_leakage_vs_baseline": max(own[a] for a in common),
            "baseline_label_cost": b.get("label_cost", math.nan),
            "baseline_label_cost_ci95_low": b.get("label_cost_ci95_low", math.nan),
            "baseline_label_cost_ci95_high": b.get("label_cost_ci95_high", math.nan),
            "baseline_label_cost_bound": bool(b.get("label_cost_bound", False))}


def _uncalibrated(g: pd.DataFrame) -> list[set]:
    """Per configuration of one dataset and designated task: the attackers it was measured against that
    its own worst case cannot count but no defense's would, i.e. those the uncapped identity of its
    setting counts. Flags shared with that identity (a derivable task, an attacker weak on raw images)
    leave everyone's worst case alike; what is left is an attacker starved by the configuration's
    release cap, which its identity twin could not calibrate."""
    reference = {tuple(r[c] for c in SETTING[1:]): set(r["leaks"])
                 for r in g[(g.defense == "identity") & (g.max_release == 0)].to_dict("records")}
    return [(reference.get(tuple(r[c] for c in SETTING[1:]), set()) & r["measured"]) - set(r["leaks"])
            for r in g.to_dict("records")]


def _apart(attackers: set, everyone: set, ratio: float, floor: float, uncalibrated: set = frozenset()) -> str:
    """Why a configuration is not ranked with the others ('' when it is)."""
    if not everyone <= attackers:
        return "fewer attackers (no " + ", ".join(sorted(everyone - attackers)) + ")"
    if uncalibrated:
        return "attackers uncalibrated at its release cap (" + ", ".join(sorted(uncalibrated)) + ")"
    if not ratio >= floor:
        return f"utility below {floor:g} x clean"
    return ""


def baseline_configurations(worst: pd.DataFrame, agg: pd.DataFrame, runs: list[dict], source: str) -> pd.DataFrame:
    """The baseline configurations among `configurations`, marked with `source` (where they come from)."""
    table = configurations(worst, agg, runs)
    return table[[is_baseline(d) for d in table.defense]].assign(source=source)


def is_baseline(defense: str) -> bool:
    try:
        return bool(getattr(DEFENSES.get(defense), "baseline", False))
    except BenchError:  # a plugin no longer installed or broken: not known to be a baseline
        return False
