"""Two long tables matched cell by cell: per matched cell and metric both means with their 95 % CIs
and seed counts, the difference and its verdict; cells on one side only, and cells whose runs of
one seed used different data, are kept apart, never dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.params import labels_of
from bench.registry import ATTACKERS, DEFENSES
from bench.results.keys import GROUP
from bench.results.tables import aggregate

# What a side's configuration is (what `--a`/`--b` select); the rest of a leaderboard group is the cell.
CONFIG_COLUMNS = ["defense", "defense_params", "max_release"]
CELL = [c for c in GROUP if c not in CONFIG_COLUMNS]
# Each side's cells keep the label their own results dir gives the configuration.
SIDE_COLUMNS = CONFIG_COLUMNS + ["defense_label"]
# The dataset and setup a cell belongs to: the heading its rows are printed under.
SETUP = ["dataset", "target_task", "target_arch", "preset", "eval_split"]
DESIGNATED = "designated model"
ATTACK_METRICS = ("leakage", "attack_acc", "ssim", "psnr")  # in the order they are printed
UTILITY_METRIC = "utility_acc"
HIGHER_IS_BETTER = {UTILITY_METRIC}  # for the others, lower means the attacker gets less
# The verdict of a difference with a single seed on either side: nothing to test it against.
NO_TEST = "n = 1: no test"


def rows_where(df: pd.DataFrame, keep: list[bool]) -> pd.DataFrame:
    """The rows of `df` where `keep` is true (`df[[]]` would select no columns, not no rows)."""
    return df.loc[np.asarray(keep, dtype=bool)]


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
    cells: pd.DataFrame    # CELL + SIDE_COLUMNS + config, id, n, weak_attacker, derivable
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
    compared = rows_where(both, [pair not in kept_apart for pair in zip(both.id_a, both.id_b)])
    vouched = set(zip(seeds[known].id_a, seeds[known].id_b))
    unchecked = sum((i, j) not in vouched for i, j in zip(compared.id_a, compared.id_b))
    return Comparison(_metric_table(compared, side_a, side_b), only_a, only_b, apart, unchecked)


def _cells(long: pd.DataFrame) -> _Cells:
    rows = cell_rows(long)
    agg = aggregate(rows)
    if agg.empty:
        cells = pd.DataFrame(columns=CELL + SIDE_COLUMNS + ["config", "id", "n", "weak_attacker", "derivable"])
        return _Cells(cells, pd.DataFrame(columns=["id", "metric", "mean", "ci95_low", "ci95_high", "n"]),
                      pd.DataFrame(columns=["id", "seed", "digest"]))
    agg = with_config_key(agg)
    cells = (agg.groupby(GROUP + ["config"], sort=True, dropna=False)
             .agg(n=("n", "max"), defense_label=("defense_label", "first"), weak_attacker=("weak_attacker", "any"),
                  derivable=("derivable", "any"))
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
    for kind, registry in (("defense", DEFENSES), ("attacker", ATTACKERS)):
        if f"{kind}_label" not in long.columns:
            labels = labels_of(long, kind, registry)
            long = long.assign(**{f"{kind}_label": [labels[k] for k in zip(long[kind], long[f"{kind}_params"])]})
    attacks = long[long.metric.isin(ATTACK_METRICS)]
    utility = long[long.metric == UTILITY_METRIC]
    if utility.empty:
        return attacks
    keys = SIDE_COLUMNS + SETUP + ["seed"]
    per_seed = (utility.groupby(keys, sort=False, dropna=False)
                .agg(value=("value", "mean"), data_digest=("data_digest", _joined), run_id=("run_id", "first"))
                .reset_index())
    designated = per_seed.assign(attacker=DESIGNATED, attacker_params="", attacker_label=DESIGNATED, knowledge="",
                                 attack_task=per_seed.target_task, metric=UTILITY_METRIC, weak_attacker=False,
                                 derivable=False)
    return pd.concat([attacks, designated[attacks.columns]], ignore_index=True)


def _joined(digests) -> str:
    """The digests recorded for one seed, as one text ("" when no record says): equal only for the same data."""
    return "|".join(sorted({d for d in digests if isinstance(d, str) and d}))


def with_config_key(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(config=[json.dumps([d, p, int(m)]) for d, p, m in
                             zip(df.defense, df.defense_params, df.max_release)])


def _one_side(pairs: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """The cells of one side in `pairs` (an outer merge), with that side's columns under their own names."""
    own = {f"{c}{suffix}": c for c in SIDE_COLUMNS + ["n", "weak_attacker", "derivable"]}
    return pairs.rename(columns=own)[CELL + list(own.values())].reset_index(drop=True)


def _metric_table(compared: pd.DataFrame, side_a: _Cells, side_b: _Cells) -> pd.DataFrame:
    stats = ["mean", "ci95_low", "ci95_high", "n"]
    keep = CELL + [f"{c}{s}" for s in ("_a", "_b") for c in SIDE_COLUMNS + ["weak_attacker", "derivable"]]
    m = (compared[keep + ["id_a", "id_b"]]
         .merge(side_a.stats.rename(columns={"id": "id_a", **{c: f"{c}_a" for c in stats}}), on="id_a")
         .merge(side_b.stats.rename(columns={"id": "id_b", **{c: f"{c}_b" for c in stats}}), on=["id_b", "metric"]))
    m["diff"] = m["mean_b"] - m["mean_a"]
    # A single seed has no interval: a difference is tested only with two or more seeds on each side.
    m["tested"] = (m["n_a"] > 1) & (m["n_b"] > 1)
    disjoint = (m["ci95_low_b"] > m["ci95_high_a"]) | (m["ci95_high_b"] < m["ci95_low_a"])
    m["significant"] = disjoint & m["tested"]
    m["verdict"] = [verdict(metric, diff, tested, significant)
                    for metric, diff, tested, significant in zip(m.metric, m["diff"], m.tested, m.significant)]
    return m.drop(columns=["id_a", "id_b"]).reset_index(drop=True)


def verdict(metric: str, diff: float, tested: bool, significant: bool) -> str:
    """The test of docs/design.md ("Comparing two cells"): disjoint 95 % CIs, with n >= 2 on both sides."""
    if not tested:
        return NO_TEST
    if not significant:
        return "no"
    b_better = (diff > 0) == (metric in HIGHER_IS_BETTER)
    return f"yes, {'B' if b_better else 'A'} better"
