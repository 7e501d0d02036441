"""What a results directory cost to compute: hours of run wall time per dataset and defense.

    python -m bench.benchmarks.grid_cost --results-dir results/reference

Two parts. Attack runs: the sum of `wall_s` of every record (the attacker's training and
scoring; a run that was the first to need the decoded data or a clean model pays for it).
Preparations, which run as their own jobs before the attacks and are in no run's `wall_s`: once
per defense configuration, dataset, seed, precision and device (a bf16 refit of a defense fitted in
fp32 earlier is a second preparation), the defense's `fit_s` plus, for a capped per-image
release (FMD), `release_ms_per_image` x the images of its three released splits. The designated
model's training is not recorded and not counted. Each job ran on cores / jobs torch threads of
a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def cost_table(results_dir: Path) -> pd.DataFrame:
    """Hours per dataset (rows) and defense (columns), attack runs plus preparations, with totals."""
    from bench.results.records import load_runs
    from bench.runspec import RunSpec

    rows, prepared = [], set()
    for r in load_runs(Path(results_dir)):
        spec = r["spec"]
        hours = r["wall_s"] / 3600 if isinstance(r.get("wall_s"), (int, float)) else 0.0
        key = json.dumps([RunSpec.from_dict(spec).defense_key(), r.get("precision", "fp32"), r.get("device")],
                         sort_keys=True)
        if key not in prepared:
            prepared.add(key)
            hours += _preparation_s(r) / 3600
        rows.append({"dataset": spec["dataset"], "defense": spec["defense"], "hours": hours})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).pivot_table(index="dataset", columns="defense", values="hours", aggfunc="sum",
                                           margins=True, margins_name="total")
    return table.round(2)


def _preparation_s(record: dict) -> float:
    m, cap = record.get("metrics") or {}, record["spec"].get("max_release")
    fit = m.get("fit_s", 0.0)
    release = m.get("release_ms_per_image", 0.0) * 3 * cap / 1000 if cap else 0.0
    return fit + release


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", type=Path, default=Path("results/reference"))
    args = p.parse_args(argv)
    table = cost_table(args.results_dir)
    if table.empty:
        print(f"no timed runs in {args.results_dir}/runs")
        return 0
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"hours in {args.results_dir}: attack runs (sum of wall_s) + defense preparations (fit, capped release):")
        print(table.fillna(0).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
