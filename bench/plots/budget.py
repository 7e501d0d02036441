"""budget-<dataset>.png: for attackers run at two or more budgets, leakage against the number of
labelled released images the attacker learnt from, one panel per attacker.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import seaborn as sns

from bench.plots.files import MAX_SIDE_IN, page_path, save_png
from bench.plots.style import (LEGEND_FONT, LEGEND_ROW, Style, attacker_labels, attacker_order, ci_bars, config_names,
                               config_styles, paged, panel_grid, text_width)

BUDGET_CURVE = ["defense", "defense_params", "max_release", "attacker", "curve_params", "attack_task"]
BUDGET_COLUMNS = 3
BUDGET_PANEL = (4.2, 3.4)
BUDGET_MIN_WIDTH = 8.0  # the title's width


def budget_figures(agg, out_dir: Path) -> list[Path]:
    """budget-<dataset>.png: leakage against the number of labelled released images the attacker
    learnt from (its budget; log scale), one panel per attacker and one curve per defense configuration
    run at two or more budgets, with 95 % CIs: how fast a defense falls as the attacker gets more data."""
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
    """The leakage rows (test split, defended) of curves with two or more budgets, each with the
    images its attacker learnt from (`images`), its configuration name and its attacker's label (`who`)."""
    key = ["dataset", "defense", "defense_params", "max_release", "attacker", "attacker_params", "attack_task"]
    test = agg[(agg.eval_split == "test") & (agg.defense != "identity")]
    images = test[test.metric == "attack_images"].set_index(key)["mean"].rename("images")
    leak = test[test.metric == "leakage"].join(images, on=key).dropna(subset=["images"])
    # One curve: everything but the budget equal.
    leak = leak.assign(curve_params=[json.dumps({k: v for k, v in json.loads(p).items() if k != "budget"},
                                                sort_keys=True) for p in leak.attacker_params])
    budgets = leak.groupby(["dataset", *BUDGET_CURVE]).images.transform("nunique")
    leak = leak[budgets >= 2]
    return leak.assign(config=config_names(leak), who=attacker_labels(leak, "curve_params"))


def _budget_page(curves, ds: str, whos: list[str], styles: dict[str, Style], path: Path) -> Path:
    names = [n for n in styles if n in set(curves.config)]
    columns = min(BUDGET_COLUMNS, len(whos))
    width = max(BUDGET_MIN_WIDTH, columns * BUDGET_PANEL[0])
    # The legend goes below the panels, in as many columns as the figure's width holds.
    legend_columns = max(1, int(width // text_width(max(map(len, names)))))
    legend_height = LEGEND_ROW * math.ceil(len(names) / legend_columns)
    fig, axes = panel_grid(len(whos), columns, BUDGET_PANEL,
                        extra=(width - columns * BUDGET_PANEL[0], 0.6 + legend_height))
    for ax, who in zip(axes, whos):
        for name, c in curves[curves.who == who].groupby("config", sort=False):
            c = c.sort_values("images")
            ax.errorbar(c.images, c["mean"], yerr=ci_bars(c), marker=styles[name].marker, color=styles[name].colour,
                        mec="black", mew=0.5, capsize=3, label=name)
        ax.set_xscale("log")
        ax.axhline(1, color="black", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("labelled released images\nthe attacker learns from (budget)", fontsize=9)
        ax.set_ylabel("leakage (dashed: no defense)", fontsize=9)
        ax.set_title(who, fontsize=10)
    # One legend for the page: a configuration has one style in every panel.
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend([handles[n] for n in names], names, loc="outside lower center", fontsize=LEGEND_FONT,
               ncol=legend_columns)
    fig.suptitle(f"{ds}: leakage against attacker budget (mean over seeds, 95 % CI)")
    return save_png(fig, path)
