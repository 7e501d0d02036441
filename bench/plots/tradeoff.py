"""tradeoff.png: utility against worst-case leakage, one panel per dataset, one point per defense
configuration (error bars: 95 % CI of the worst attacker).
"""
from __future__ import annotations

from pathlib import Path

import seaborn as sns

from bench.plots.files import save_png
from bench.plots.style import (ci_bars, config_names, config_styles, draw_point, legend_beside, legend_column_count,
                               panel_grid, text_width)

TRADEOFF_COLUMNS = 2
TRADEOFF_PANEL_WIDTH, TRADEOFF_PANEL_HEIGHT = 5.0, 4.2


def tradeoff_figure(worst, agg, path: Path) -> Path | None:
    """Utility against worst-case leakage: one panel per dataset, one point per configuration."""
    worst = worst.dropna(subset=["utility_acc"])
    if worst.empty:
        return None
    datasets = sorted(worst.dataset.unique())
    columns = min(TRADEOFF_COLUMNS, len(datasets))
    names = config_names(worst)
    legend_width = text_width(max(map(len, names))) * legend_column_count(worst.dataset.value_counts().max())
    sns.set_theme(style="whitegrid")
    fig, axes = panel_grid(len(datasets), columns, (TRADEOFF_PANEL_WIDTH + legend_width, TRADEOFF_PANEL_HEIGHT),
                        extra=(0, 0.5))
    for ax, ds in zip(axes, datasets):
        styles = config_styles(agg[agg.dataset == ds])
        d = worst.assign(name=names)[worst.dataset == ds]
        labelled = set()
        for name in [n for n in styles if n in set(d.name)]:
            points = d[d.name == name]
            # No calibrated attacker: no worst case, so no point (the CI is nan too).
            cis = ci_bars(points, "worst_leakage", "worst_ci95_low", "worst_ci95_high")
            for row, ci in zip(points.itertuples(), cis.T):
                draw_point(ax, row.utility_acc, row.worst_leakage, styles[name],
                            None if name in labelled else name, yerr=ci.reshape(2, 1))
                labelled.add(name)
        ax.set_xlabel("utility (designated-model accuracy on released test data)", fontsize=9)
        ax.set_ylabel("worst-case leakage over calibrated attackers\n(0 = nothing, 1 = as with no defense)", fontsize=9)
        ax.set_title(ds)
        ax.axhline(0, color="grey", lw=0.8)
        legend_beside(ax)
    fig.suptitle("Utility vs leakage (better: right and low)")
    return save_png(fig, path)
