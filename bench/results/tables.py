"""The tables derived from run records: the long table (one row per run and metric), its aggregate over
seeds (mean, std, n, 95 % CI) and the worst case per defense configuration. Never edited by hand.
"""
from __future__ import annotations

import json

import pandas as pd

from bench import metrics as M
from bench.errors import BenchError
from bench.params import label_book
from bench.registry import ATTACKERS, DEFENSES
from bench.results.calibration import flag_weak_private_attackers
from bench.results.keys import (BOOL_FLAGS, CONFIG, GROUP, LABEL_COLUMNS, LONG_COLUMNS, full_budget, record_columns,
                                spec_columns)
from bench.results.records import check_one_data_version, check_one_record_per_seed


def long_table(runs: list[dict]) -> pd.DataFrame:
    """One row per `ok` run and metric; two runs that are one seed of one configuration, or runs on two
    versions of one dataset, are refused."""
    check_one_record_per_seed(runs)
    check_one_data_version(runs)
    done = [(r, record_columns(r)) for r in runs if r["status"] == "ok"]
    books = label_books(runs)
    rows = []
    for r, row in done:
        base = {"run_id": r["run_id"], **row, "knowledge": r.get("knowledge", ""),
                **{f"{kind}_label": books[kind][(row[kind], row[f"{kind}_params"])] for kind in books},
                **{f: bool(r.get("flags", {}).get(f, False)) for f in BOOL_FLAGS}}
        rows += [{**base, "metric": k, "value": float(v)} for k, v in sorted(_metrics(r, row).items())]
    df = flag_weak_private_attackers(pd.DataFrame(rows, columns=LONG_COLUMNS))
    return df.sort_values(["dataset", "defense", "defense_params", "attacker", "seed", "metric"], kind="stable",
                          ignore_index=True)


def _metrics(record: dict, row: dict) -> dict:
    """A record's metrics; one written before runs counted `attack_images` gets it where the count is
    known: an attacker at budget 0 learnt from every released attacker image, the attacker split its
    record names (as every later record of such a run says), so its full-budget point joins its budget curve."""
    metrics = record["metrics"]
    if "attack_images" not in metrics and json.loads(row["attacker_params"]).get("budget") == 0 \
            and isinstance(record.get("splits", {}).get("attacker"), int):
        return {**metrics, "attack_images": float(record["splits"]["attacker"])}
    return metrics


def label_books(runs: list[dict]) -> dict[str, dict[tuple[str, str], str]]:
    """{"defense": {(name, params_json): label}, "attacker": ...} for every configuration of `runs`, each
    labelled against the defaults its first record ran under (`bench.params.label_book`); every table,
    plot and report page of one results dir names configurations by these."""
    specs = [(r, spec_columns(r["spec"])) for r in runs]
    return {kind: label_book(((row[kind], row[f"{kind}_params"], (r.get("defaults") or {}).get(kind),
                               r.get("timestamp")) for r, row in specs), registry)
            for kind, registry in (("defense", DEFENSES), ("attacker", ATTACKERS))}


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n and 95 % CI over seeds for every (configuration, attacker, metric)."""
    if long.empty:
        return pd.DataFrame(columns=GROUP + [*LABEL_COLUMNS, *BOOL_FLAGS, "metric", "mean", "std", "n", "ci95_low",
                                             "ci95_high"])
    check_seeds_counted_once(long)
    rows = []
    for key, g in long.groupby(GROUP + ["metric"], sort=True, dropna=False):
        v = g["value"].to_numpy()
        lo, hi = M.ci95(v)
        rows.append({**dict(zip(GROUP + ["metric"], key)), **{c: g[c].iloc[0] for c in LABEL_COLUMNS if c in g},
                     **{f: bool(g[f].any()) for f in BOOL_FLAGS},
                     "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
                     "ci95_low": lo, "ci95_high": hi})
    return pd.DataFrame(rows)


def counted(agg: pd.DataFrame) -> pd.Series:
    """The leakage rows a worst case counts: calibrated attackers at their own budget, on non-derivable tasks."""
    return (agg.metric == "leakage") & ~agg.weak_attacker & ~agg.derivable & pd.Series(
        full_budget(agg.attacker, agg.attacker_params), index=agg.index, dtype=bool)


def worst_case(agg: pd.DataFrame) -> pd.DataFrame:
    """Per defense configuration: utility and the worst leakage over calibrated attackers.

    A defense is ranked by its worst case; attackers flagged weak do not count, nor do private
    tasks flagged derivable (a function of the designated task: no release that keeps utility
    can hide them), nor an attacker at another budget than its own (a point of a budget curve: the
    budget is the label cost's axis, and a ratio of two small-budget accuracies is noisy enough to
    decide a maximum by chance), and a configuration with no other attacker gets no rank.
    """
    cols = CONFIG + ["defense_label", "utility_acc", "agreement", "worst_leakage", "worst_ci95_low", "worst_ci95_high",
                     "worst_attacker", "n_attackers", "n_seeds"]
    if agg.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in agg.groupby(CONFIG, sort=True):
        util = g[g.metric == "utility_acc"]["mean"]
        agree = g[g.metric == "agreement"]["mean"]
        leaks = g[counted(g)]
        row = dict(zip(CONFIG, key), utility_acc=float(util.mean()) if len(util) else float("nan"),
                   agreement=float(agree.mean()) if len(agree) else float("nan"),
                   n_attackers=int(leaks.attacker.nunique()), n_seeds=int(g["n"].max()),
                   **({"defense_label": g.defense_label.iloc[0]} if "defense_label" in g else {}))
        if len(leaks):
            worst = leaks.loc[leaks["mean"].idxmax()]
            row.update(worst_leakage=worst["mean"], worst_ci95_low=worst["ci95_low"],
                       worst_ci95_high=worst["ci95_high"], worst_attacker=f"{worst.attacker}[{worst.attack_task}]")
        rows.append(row)
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["dataset", "worst_leakage"], na_position="last", ignore_index=True)


def check_seeds_counted_once(long: pd.DataFrame, where: str = "") -> None:
    """n is a number of seeds: refuse a long table holding one (configuration, seed, metric) twice."""
    dup = long[long.duplicated(GROUP + ["seed", "metric"], keep=False)]
    if len(dup):
        key = dup.groupby(GROUP + ["seed", "metric"], sort=False, dropna=False).ngroup()
        same = dup[key == key.iloc[0]]
        first = same.iloc[0]
        ids = ", ".join(dict.fromkeys(map(str, same["run_id"])))
        raise BenchError(f"{where}runs {ids} are all seed {first['seed']} of one configuration ({first['defense']} x "
                         f"{first['attacker']} on {first['dataset']}[{first['attack_task']}], metric "
                         f"{first['metric']}): n counts seeds, so each may appear once")
