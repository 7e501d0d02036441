"""Do runs at one precision agree with the same runs at another? Cell by cell, against the CI.

    python -m bench.precision_agreement results/reference results/precision

Both results dirs are read through the validated records. Every cell (configuration, attacker,
task) that the second dir (`candidate`, e.g. bf16 runs) holds is set beside the same cell of the
first (`baseline`, e.g. the committed fp32 runs), for the metrics a verdict is made of: the
designated model's clean and released accuracy, the attacker's accuracy, and an inversion's PSNR
and SSIM. A cell agrees when the candidate's mean lies inside the baseline's 95 % CI over seeds;
`cis_overlap` says whether the two CIs meet at all. The table lists every cell either way, so a
difference is shown, never averaged away.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from bench.params import config_label
from bench.registry import ATTACKERS
from bench.results.keys import GROUP
from bench.results.records import load_runs
from bench.results.tables import aggregate, long_table

METRICS = ("clean_acc", "utility_acc", "attack_acc", "psnr", "ssim")
DESIGNATED = ("clean_acc", "utility_acc")
COLUMNS = ["dataset", "config", "attacker", "task", "metric", "baseline", "baseline_ci95", "candidate",
           "candidate_ci95", "difference", "agrees", "cis_overlap"]


def cells(results_dir: Path) -> pd.DataFrame:
    agg = aggregate(long_table(load_runs(results_dir)))
    return agg[agg.metric.isin(METRICS)]


def agreement(baseline_dir: Path, candidate_dir: Path) -> pd.DataFrame:
    """One row per cell and metric of `candidate_dir`, beside the same cell of `baseline_dir` (NaN: none there)."""
    key = GROUP + ["metric"]
    base, cand = cells(baseline_dir), cells(candidate_dir)
    joined = cand.merge(base, on=key, how="left", suffixes=("_c", "_b"))
    rows = []
    for _, r in joined.iterrows():
        cap = f" [{int(r.max_release)} released]" if r.max_release else ""
        attacker = config_label(r.attacker, r.attacker_params, _attackers())
        inside = bool(r.ci95_low_b <= r.mean_c <= r.ci95_high_b) if pd.notna(r.mean_b) else False
        overlap = bool(r.ci95_low_b <= r.ci95_high_c and r.ci95_low_c <= r.ci95_high_b) if pd.notna(r.mean_b) else False
        designated = r.metric in DESIGNATED
        rows.append({"dataset": r.dataset, "config": config_label(r.defense, r.defense_params) + cap,
                     # The designated model's numbers are the same in every run of a configuration and seed.
                     "attacker": "(every)" if designated else attacker,
                     "task": r.target_task if designated else f"{r.target_task}->{r.attack_task}", "metric": r.metric,
                     "baseline": r.mean_b, "baseline_ci95": _ci(r.ci95_low_b, r.ci95_high_b, r.n_b),
                     "candidate": r.mean_c, "candidate_ci95": _ci(r.ci95_low_c, r.ci95_high_c, r.n_c),
                     "difference": r.mean_c - r.mean_b, "agrees": inside, "cis_overlap": overlap})
    table = pd.DataFrame(rows, columns=COLUMNS).drop_duplicates()
    return table.sort_values(["dataset", "config", "attacker", "metric"], ignore_index=True)


def _attackers():
    return ATTACKERS


def _ci(low, high, n) -> str:
    if pd.isna(low):
        return "none"
    return f"[{low:.4f}, {high:.4f}] n={int(n)}"


def markdown(table: pd.DataFrame) -> str:
    shown = table.assign(**{c: table[c].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
                            for c in ("baseline", "candidate")},
                         difference=table.difference.map(lambda v: "" if pd.isna(v) else f"{v:+.4f}"),
                         agrees=table.agrees.map({True: "yes", False: "**no**"}),
                         cis_overlap=table.cis_overlap.map({True: "yes", False: "**no**"}))
    return shown.to_markdown(index=False)


def summary(table: pd.DataFrame) -> str:
    outside = table[~table.agrees]
    apart = table[~table.cis_overlap]
    return (f"{len(table) - len(outside)} of {len(table)} cells inside the baseline's 95 % CI, "
            f"{len(table) - len(apart)} with overlapping CIs; outside the baseline's CI: "
            + ("; ".join(f"{r.dataset} {r.config} x {r.attacker} {r.metric} {r.difference:+.4f}"
                         + ("" if r.cis_overlap else " (CIs apart)") for r in outside.itertuples()) or "none"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("baseline", type=Path, help="results dir of the runs to compare against (e.g. the fp32 ones)")
    p.add_argument("candidate", type=Path, help="results dir of the same runs at the other precision")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a markdown table")
    args = p.parse_args(argv)
    table = agreement(args.baseline, args.candidate)
    if args.json:
        print(json.dumps(table.to_dict(orient="records"), indent=1))
    else:
        print(markdown(table))
        print()
        print(summary(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
