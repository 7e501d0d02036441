"""`write_plots`: the leaderboards and every figure of a results dir, regenerated from its records.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from bench.errors import BenchError
from bench.plots.attackers import attacker_figures
from bench.plots.budget import budget_figures
from bench.plots.files import plot_path
from bench.plots.grids import grid_figures, grid_inputs
from bench.plots.sweeps import sweep_figures
from bench.plots.tradeoff import tradeoff_figure
from bench.results.headline import FLOOR
from bench.results.leaderboards import write_leaderboards
from bench.results.records import load_runs


def write_plots(results_dir: Path) -> list[Path]:
    """Regenerate the leaderboards and every figure; the paths written.

    Everything that can be refused (a bad record, a bad sample, a `plots` that leads outside the
    results dir) is checked before the first file is written.
    """
    results_dir = Path(results_dir)
    out_dir = results_dir / "plots"
    runs = load_runs(results_dir)
    samples = grid_inputs(results_dir, runs)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise BenchError(f"{out_dir} is not a directory inside {results_dir} (a symlink or a file): the plots are "
                         "written only there; remove it")
    tables = write_leaderboards(results_dir, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    long, agg, worst = (by_task_pair(tables[k], tables["agg"]) for k in ("long", "agg", "worst"))
    written = []
    try:
        if not agg.empty:
            written.append(tradeoff_figure(worst, agg, plot_path(out_dir, "tradeoff"),
                                           _utility_floor(tables["headline"])))
            written += attacker_figures(agg, out_dir)
            written += sweep_figures(long, agg, out_dir)
            written += budget_figures(agg, out_dir)
        written += grid_figures(samples, out_dir)
    finally:
        plt.close("all")
    return [p for p in written if p is not None]


def by_task_pair(table, agg):
    """`table` with the dataset of each row named with its designated task where a dataset was run with
    several (`fashion-mnist [group]`): every figure groups by dataset, and two task pairs are two settings
    whose configurations must not share a panel or a row."""
    tasks = agg.groupby("dataset")["target_task"].nunique()
    several = set(tasks[tasks > 1].index)
    if not several or "target_task" not in table:
        return table
    return table.assign(dataset=[f"{d} [{t}]" if d in several else d for d, t in zip(table.dataset, table.target_task)])


def _utility_floor(headline) -> float:
    """The floor the headline was ranked with: the trade-off figure draws the same one."""
    floors = headline["utility_floor"].dropna().unique() if "utility_floor" in headline else []
    return float(floors[0]) if len(floors) else FLOOR
