"""budget-<dataset>.png: for attackers run at MIN_BUDGETS or more budgets, leakage against the number of
labelled released images the attacker learnt from, one panel per attacker.
"""
from __future__ import annotations

import math
from pathlib import Path

import seaborn as sns
from matplotlib.lines import Line2D

from bench.plots.files import MAX_SIDE_IN, page_path, save_png
from bench.plots.style import (APART_COLOUR, APART_LEGEND, LEGEND_FONT, LEGEND_ROW, Style, apart, attacker_labels,
                               attacker_order, ci_bars, config_names, config_styles, draw_apart, focus, paged,
                               panel_grid, text_width)
from bench.results.keys import curve_params

BUDGET_CURVE = ["defense", "defense_params", "max_release", "attacker", "curve_params", "attack_task"]
BUDGET_COLUMNS = 3
BUDGET_PANEL = (4.2, 3.4)
BUDGET_MIN_WIDTH = 8.0  # the title's width
# Budgets a curve needs to be drawn: two points are a segment that says nothing about how leakage grows,
# and a panel of configurations run at one or two budgets is a near-empty figure.
MIN_BUDGETS = 3


# Two budgets closer than this factor overprint each other even slanted (20000 beside 22500).
TICK_LABEL_GAP = 1.3


def budget_tick_labels(budgets: list[float]) -> list[str]:
    """A label per budget run, except one that sits within TICK_LABEL_GAP of the next: that tick stays
    unlabelled, and the larger budget (often the full attacker split) keeps its number."""
    return [f"{b:g}" if nxt is None or nxt >= TICK_LABEL_GAP * b else ""
            for b, nxt in zip(budgets, [*budgets[1:], None])]


def budget_figures(agg, out_dir: Path) -> list[Path]:
    """budget-<dataset>.png: leakage against the number of labelled released images the attacker
    learnt from (its budget; log scale), one panel per attacker and one curve per defense configuration
    run at MIN_BUDGETS or more budgets, with 95 % CIs: how fast a defense falls as the attacker gets more
    data. A point of a weak attacker (a small budget often is one) is grey and sets no range."""
    curves = _budget_curves(agg)
    if curves.empty:
        return []
    sns.set_theme(style="whitegrid")
    paths = []
    for ds, g in curves.groupby("dataset", sort=True):
        styles = config_styles(agg[agg.dataset == ds])
        whos = attacker_order(g, "curve_params")
        rows_per_page = max(1, int((MAX_SIDE_IN - 0.5) // BUDGET_PANEL[1]))
        for page, page_whos in enumerate(paged(whos, rows_per_page * BUDGET_COLUMNS), 1):
            paths.append(_budget_page(g[g.who.isin(page_whos)], ds, page_whos, styles,
                                      page_path(out_dir, "budget", ds, page)))
    return paths


def _budget_curves(agg):
    """The leakage rows (test split, defended) of curves with MIN_BUDGETS or more budgets, each with the
    images its attacker learnt from (`images`), its configuration name and its attacker's label (`who`)."""
    key = ["dataset", "defense", "defense_params", "max_release", "attacker", "attacker_params", "attack_task"]
    test = agg[(agg.eval_split == "test") & (agg.defense != "identity")]
    images = test[test.metric == "attack_images"].set_index(key)["mean"].rename("images")
    leak = test[test.metric == "leakage"].join(images, on=key).dropna(subset=["images"])
    # One curve: everything but the budget equal.
    leak = leak.assign(curve_params=curve_params(leak.attacker_params))
    budgets = leak.groupby(["dataset", *BUDGET_CURVE]).images.transform("nunique")
    leak = leak[budgets >= MIN_BUDGETS]
    return leak.assign(config=config_names(leak), who=attacker_labels(leak, "curve_params"))


def _budget_page(curves, ds: str, whos: list[str], styles: dict[str, Style], path: Path) -> Path:
    names = [n for n in styles if n in set(curves.config)]
    columns = min(BUDGET_COLUMNS, len(whos))
    width = max(BUDGET_MIN_WIDTH, columns * BUDGET_PANEL[0])
    # The legend goes below the panels, in as many columns as the figure's width holds.
    legend_columns = max(1, int(width // text_width(max(map(len, [*names, APART_LEGEND])))))
    legend_height = LEGEND_ROW * math.ceil((len(names) + 1) / legend_columns)
    fig, axes = panel_grid(len(whos), columns, BUDGET_PANEL,
                        extra=(width - columns * BUDGET_PANEL[0], 0.6 + legend_height))
    any_apart = False
    for ax, who in zip(axes, whos):
        drawn = []
        for name, c in curves[curves.who == who].groupby("config", sort=False):
            c = c.sort_values("images")
            off = apart(c)
            any_apart |= bool(off.any())
            style = styles[name]
            # The line through every point keeps the curve one curve; only calibrated points get a CI.
            ax.plot(c.images, c["mean"], color=style.colour, lw=1.2)
            counted = c[~off]
            ax.errorbar(counted.images, counted["mean"], yerr=ci_bars(counted), fmt=style.marker, color=style.colour,
                        mec="black", mew=0.5, capsize=3)
            drawn.append((c, off, style))
        panel = curves[curves.who == who]
        ax.set_xscale("log")
        # The budgets run, as numbers: "3 x 10^2" ticks between them name budgets nobody ran.
        budgets = sorted(set(panel.images))
        # Slanted when they would touch: many budgets, or two within a factor of 2 (2000 beside 3000).
        crowded = len(budgets) > 5 or any(high < 2 * low for low, high in zip(budgets, budgets[1:]))
        ax.set_xticks(budgets, budget_tick_labels(budgets), rotation=30 if crowded else 0)
        ax.minorticks_off()
        ax.axhline(1, color="black", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        counted = panel[~apart(panel)]
        focus(ax, [0.0, 1.0, *counted["mean"]], [*counted.ci95_low, *counted.ci95_high], "y")
        for c, off, style in drawn:
            for r in c[off].itertuples():
                draw_apart(ax, r.mean, r.images, (r.ci95_low, r.ci95_high), style.marker, axis="y")
        ax.set_xlabel("labelled released images\nthe attacker learns from (budget)", fontsize=9)
        ax.set_ylabel("leakage (dashed: no defense)", fontsize=9)
        ax.set_title(who, fontsize=10)
    # One legend for the page: a configuration has one style in every panel.
    handles = [Line2D([], [], color=styles[n].colour, marker=styles[n].marker, mec="black", mew=0.5) for n in names]
    labels = list(names)
    if any_apart:
        handles.append(Line2D([], [], color=APART_COLOUR, marker="o", mfc="white", ls="none"))
        labels.append(APART_LEGEND)
    fig.legend(handles, labels, loc="outside lower center", fontsize=LEGEND_FONT, ncol=legend_columns)
    fig.suptitle(f"{ds}: leakage against attacker budget (mean over seeds, 95 % CI)")
    return save_png(fig, path)
