"""Baselines a user's results dir borrows from the reference results, so that a new defense run alone
still stands beside the trivial transform it must beat.

A baseline is borrowed only where the user's runs hold none of their own for a dataset, and only from
runs on the same data: every seed both dirs ran of that dataset (with its options, preset and split)
must carry the same `data_digest`, and they must share at least one. The headline then names the
source of each borrowed baseline (`baseline_source`).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

from bench.results.headline import baseline_configurations, is_baseline
from bench.results.records import read_record
from bench.results.tables import aggregate, long_table, worst_case

SOURCE = "reference results"


def borrowed_baselines(runs: list[dict], results_dir: Path, reference: Path | None) -> pd.DataFrame | None:
    """The baseline configurations of `reference` on the datasets of `runs` that have no baseline of their own
    and whose data the two dirs share; None when there are none to borrow."""
    if reference is None or not (Path(reference) / "runs").is_dir():
        return None
    if Path(reference).resolve() == Path(results_dir).resolve():
        return None
    ok = [r for r in runs if r["status"] == "ok"]
    own = {r["spec"]["dataset"] for r in ok if is_baseline(r["spec"]["defense"])}
    wanted = tuple(sorted({r["spec"]["dataset"] for r in ok} - own))
    if not wanted:
        return None
    runs_dir = Path(reference).resolve() / "runs"
    stamp = (runs_dir.stat().st_mtime_ns, sum(1 for _ in runs_dir.iterdir()))
    theirs = _reference_runs(str(runs_dir.parent), stamp, wanted)
    shared = tuple(d for d in wanted if _same_data(ok, theirs, d))
    if not shared:
        return None
    table = _baselines(str(runs_dir.parent), stamp, shared)
    return table if len(table) else None


def _data_keys(runs: list[dict], dataset: str) -> dict[tuple, str]:
    """(dataset options, preset, split, seed) -> the data digest that seed used, over the runs of `dataset`."""
    keys = {}
    for r in runs:
        s = r["spec"]
        if s["dataset"] == dataset and r.get("data_digest"):
            key = (json.dumps(s["dataset_params"], sort_keys=True), s["preset"], s.get("eval_split", "test"), s["seed"])
            keys.setdefault(key, r["data_digest"])
    return keys


def _same_data(mine: list[dict], theirs: list[dict], dataset: str) -> bool:
    a, b = _data_keys(mine, dataset), _data_keys(theirs, dataset)
    common = set(a) & set(b)
    return bool(common) and all(a[k] == b[k] for k in common)


# Read once per process and state of the reference dir: leaderboards are rewritten after every run.
@lru_cache(maxsize=4)
def _reference_runs(reference: str, stamp: tuple, datasets: tuple[str, ...]) -> list[dict]:
    """The reference's records of `datasets`, each validated (`read_record`); the others are only glanced at,
    as reading and checking every record of a large reference costs seconds on each leaderboard write."""
    runs = []
    for path in sorted((Path(reference) / "runs").glob("*.json")):
        try:
            dataset = json.loads(path.read_bytes())["spec"]["dataset"]
        except (OSError, ValueError, KeyError, TypeError):
            dataset = None   # not a record it can glance at: read_record says what is wrong with it
        if dataset is None or dataset in datasets:
            runs.append(read_record(path))
    return runs


@lru_cache(maxsize=8)
def _baselines(reference: str, stamp: tuple, datasets: tuple[str, ...]) -> pd.DataFrame:
    runs = [r for r in _reference_runs(reference, stamp, datasets) if r["spec"]["dataset"] in datasets]
    agg = aggregate(long_table(runs))
    return baseline_configurations(worst_case(agg), agg, runs, SOURCE)
