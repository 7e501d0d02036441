"""tradeoff.png: utility against worst-case leakage, one panel per dataset, one point per defense
configuration (error bars: 95 % CI of the worst attacker), with the headline's utility floor.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.transforms import blended_transform_factory

from bench.plots.files import save_png
from bench.plots.style import (APART_COLOUR, LEGEND_BESIDE, LEGEND_FONT, ci_bars, config_names, config_styles,
                               draw_point, focus, legend_below, legend_below_height, legend_beside, line_widths,
                               panel_grid, wrapped)
from bench.results.headline import FLOOR

TRADEOFF_COLUMNS = 3
TRADEOFF_PANEL_WIDTH, TRADEOFF_PANEL_HEIGHT = 6.4, 4.4
# The narrowest utility axis: one configuration alone would otherwise be zoomed to its own error of
# measurement, its distance to the floor unreadable.
MIN_UTILITY_SPAN = 0.1


def tradeoff_figure(worst, agg, path: Path, floor: float = FLOOR) -> Path | None:
    """Utility against worst-case leakage: one panel per dataset, one point per configuration, and the
    utility floor a configuration must reach to be ranked (`floor` x the designated model's clean accuracy)."""
    worst = worst.dropna(subset=["utility_acc"])
    if worst.empty:
        return None
    datasets = sorted(worst.dataset.unique())
    columns = min(TRADEOFF_COLUMNS, len(datasets))
    worst = worst.assign(name=config_names(worst))
    legends = [[wrapped(n) for n in g.name.unique()] for _, g in worst.groupby("dataset")]
    # Every panel's legend in one place: below all of them once one is too long to stand beside its panel.
    below = max(map(len, legends)) > LEGEND_BESIDE
    if below:
        panel = (TRADEOFF_PANEL_WIDTH, TRADEOFF_PANEL_HEIGHT
                 + max(legend_below_height(labels, TRADEOFF_PANEL_WIDTH) for labels in legends))
    else:
        panel = (TRADEOFF_PANEL_WIDTH + max(map(line_widths, legends)),
                 TRADEOFF_PANEL_HEIGHT)
    sns.set_theme(style="whitegrid")
    fig, axes = panel_grid(len(datasets), columns, panel, extra=(0, 0.5))
    for ax, ds in zip(axes, datasets):
        styles = config_styles(agg[agg.dataset == ds])
        d = worst[worst.dataset == ds]
        labelled = set()
        for name in [n for n in styles if n in set(d.name)]:
            points = d[d.name == name]
            cis = ci_bars(points, "worst_leakage", "worst_ci95_low", "worst_ci95_high")
            for row, ci in zip(points.itertuples(), cis.T):
                label = None if name in labelled else wrapped(name)
                labelled.add(name)
                if np.isfinite(row.worst_leakage):
                    # A CI that is not a number is not drawn rather than drawn as nothing.
                    yerr = ci.reshape(2, 1) if np.isfinite(ci).all() else None
                    draw_point(ax, row.utility_acc, row.worst_leakage, styles[name], label, yerr=yerr)
                else:
                    _no_worst_case(ax, row.utility_acc, styles[name].marker, label)
        clean = _clean_accuracy(agg, ds)
        line = floor * clean if clean is not None else None
        _utility_axis(ax, [*d.utility_acc, *([line] if line is not None else [])])
        focus(ax, [0.0, 1.0, *d.worst_leakage], [*d.worst_ci95_low, *d.worst_ci95_high], "y")
        if line is not None:
            _floor_line(ax, line, floor, clean)
        ax.set_xlabel("utility (designated-model accuracy on released test data)", fontsize=9)
        ax.set_ylabel("worst-case leakage over calibrated attackers\n(0 = nothing, 1 = as with no defense)", fontsize=9)
        ax.set_title(ds)
        ax.axhline(0, color="grey", lw=0.8)
        if below:
            legend_below(ax, TRADEOFF_PANEL_WIDTH)
        else:
            legend_beside(ax)
    fig.suptitle("Utility vs leakage (better: right and low)")
    return save_png(fig, path)


def _clean_accuracy(agg, ds: str) -> float | None:
    """The designated model's clean accuracy on `ds` as the floor is taken from: on the whole test split
    where it was run so (a release cap scores a subset, where it differs a little), else wherever it was."""
    clean = agg[(agg.dataset == ds) & (agg.metric == "clean_acc")]
    for narrower in (clean[(clean.eval_split == "test") & (clean.max_release == 0)], clean[clean.eval_split == "test"]):
        if len(narrower):
            clean = narrower
            break
    value = float(clean["mean"].mean()) if len(clean) else math.nan
    return value if math.isfinite(value) else None


def _utility_axis(ax, utilities: list[float]) -> None:
    """x limits holding every point and the floor, at least MIN_UTILITY_SPAN wide, never past accuracy 1."""
    values = [v for v in utilities if math.isfinite(v)]
    low, high = min(values), max(values)
    if high - low < MIN_UTILITY_SPAN:
        middle = (low + high) / 2
        low, high = middle - MIN_UTILITY_SPAN / 2, middle + MIN_UTILITY_SPAN / 2
        if high > 1:
            low, high = low - (high - 1), 1.0
    pad = 0.05 * (high - low)
    ax.set_xlim(low - pad, high + pad)


def _floor_line(ax, x: float, floor: float, clean: float) -> None:
    """The headline's utility floor: a configuration left of it is listed apart, never ranked."""
    ax.axvline(x, color="black", ls=":", lw=1.2)
    ax.annotate(f"utility floor\n{floor:g} x clean ({clean:.3g})", (x, 0), xycoords=ax.get_xaxis_transform(),
                xytext=(-4, 4), textcoords="offset points", ha="right", va="bottom", fontsize=LEGEND_FONT)


def _no_worst_case(ax, utility: float, marker: str, label: str | None) -> None:
    """A configuration no calibrated attacker met has no worst case: a grey, hollow marker at its utility
    on the top edge, named so in the legend, never at a made-up height."""
    on_top = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(utility, 1.0, marker=marker, ms=7, mfc="white", mec=APART_COLOUR, mew=1.2, ls="none", clip_on=False,
            transform=on_top, label=None if label is None else f"{label} (no calibrated attacker)")
