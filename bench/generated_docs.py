"""The tables of README.md, RESULTS.md and docs/performance.md, generated from the reference results.

A generated table sits between two markers,

    <!-- generated: NAME -->
    ...
    <!-- end generated: NAME -->

and `python -m bench.generated_docs` rewrites what is between them from `results/reference/`
(`--check` only reports stale ones, exit 1): no result number in those files is typed by hand,
and `tests/test_docs.py` fails when one is out of date.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bench import views
from bench.benchmarks.grid_cost import cost_table
from bench.claims import judge, labelled, load_claims
from bench.precision_agreement import agreement, markdown, summary
from bench.results.headline import is_baseline
from bench.results.leaderboards import leaderboards
from bench.results.records import load_runs
from bench.results.tables import aggregate, long_table

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference"
PRECISION = REPO / "results" / "precision"   # the reference runs again at bf16 (docs/performance.md)
DOCS = ("README.md", "RESULTS.md", "docs/performance.md")
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)", re.S)
README_HEADLINE = ["dataset", "tasks", "rank", "config", "utility_ratio", "worst_leakage", "worst_ci95", "label_cost",
                   "n_seeds", "baseline", "baseline_worst_leakage"]


def blocks(results_dir: Path = REFERENCE) -> dict[str, str]:
    """Every generated table by name, as Markdown."""

    tables = leaderboards(results_dir)
    return {
        "headline-ranked": views.markdown(
            views.headline(_defended(tables["headline"]), ranked_only=True)[README_HEADLINE]),
        "headline": views.markdown(views.headline(tables["headline"])),
        "label-cost-summary": views.label_cost_summary(tables["headline"]),
        "per-attacker": views.markdown(views.per_attacker(tables["agg"])),
        "worst": views.markdown(views.worst(tables["worst"])),
        "claims": _claims_table(results_dir, tables["agg"], tables["label_cost"]),
        "benchmarks": _benchmark_table(REPO / "docs" / "benchmarks"),
        "cost": cost_table(results_dir).fillna(0).reset_index().to_markdown(index=False, floatfmt=".2f"),
        "precision-agreement": _agreement_table(results_dir, PRECISION),
    }


def _defended(top):
    """The ranked rows of defenses proper: identity (leakage 1 by definition) and the trivial baselines
    (each shown beside the defenses it matches) stay in RESULTS.md's full table."""
    return top[[name != "identity" and not is_baseline(name) for name in top.defense]]


def _agreement_table(fp32: Path, bf16: Path) -> str:
    if not (bf16 / "runs").is_dir():
        return "(no bf16 runs committed)"
    table = agreement(fp32, bf16)
    return markdown(table) + "\n\n" + summary(table)


def _claims_table(results_dir: Path, agg, costs) -> str:
    """Each seed paper's claims (results/claims.csv) beside the cell that measures it, judged by its rule."""
    import pandas as pd

    tuning = Path(results_dir) / "tuning"
    tables = {"main": labelled(agg, costs),
              "tuning": labelled(aggregate(long_table(load_runs(tuning)))) if (tuning / "runs").is_dir() else None}
    rows = [{"paper": v.claim.paper, "claim": v.claim.claim, "paper's value": v.claim.paper_value,
             "setting here": v.claim.setting, "measured": v.measured, "verdict": v.verdict}
            for v in judge(load_claims(REPO / "results" / "claims.csv"), tables)]
    return pd.DataFrame(rows).to_markdown(index=False)


def _benchmark_table(folder: Path) -> str:
    """One row per saved benchmark output (docs/benchmarks/*.txt, whose first line is
    `# <command>   (<commit, date, machine state>)`): its headline figure, linked to the whole output."""
    import pandas as pd

    rows = []
    for path in sorted(folder.glob("*.txt")):
        first, *lines = path.read_text().splitlines()
        command, _, context = first.lstrip("# ").partition("   ")
        figure = headline_figure(lines)
        if figure:
            rows.append({"benchmark": f"[`{path.stem}`](docs/benchmarks/{path.name})", "headline figure": figure,
                         "measured": context.strip("()").split(";")[0]})
    return pd.DataFrame(rows).to_markdown(index=False) if rows else "(no saved benchmark output)"


def headline_figure(lines: list[str], width: int = 100) -> str | None:
    """The line a benchmark leads with: its `speed-up:` line, else its first ratio, cut before its
    parenthesised detail to fit `width` characters."""
    figures = [" ".join(line.split()) for line in lines if re.search(r"\b(ratio|speed-up)\b", line)]
    lead = next((f for f in figures if f.startswith("speed-up:")), figures[0] if figures else None)
    if lead is None:
        return None
    while len(lead) > width and " (" in lead:
        lead = lead[:lead.rindex(" (")]
    return lead[:width]


def refresh(text: str, tables: dict[str, str], where: str) -> str:
    """`text` with every generated block replaced by its table; an unknown block name is an error."""
    def body(m: re.Match) -> str:
        name = m["name"]
        if name not in tables:
            raise KeyError(f"{where}: unknown generated block {name!r} (known: {', '.join(sorted(tables))})")
        return m.group(1) + tables[name] + "\n" + m.group(4)

    return BLOCK.sub(body, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generated_docs", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report stale tables, change nothing (exit 1 if any)")
    args = p.parse_args(argv)
    tables = blocks()
    stale = []
    for name in DOCS:
        path = REPO / name
        text = path.read_text()
        new = refresh(text, tables, name)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    verb = "stale" if args.check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "generated tables up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
