"""attackers-<dataset>.png: one panel per attacker, one row per defense configuration: its leakage
with the 95 % CI (with no defense run on the dataset: the attacker's accuracy, SSIM for inversion,
against chance); a CI far wider than the spread of the points runs off the panel. Cells of a weak attacker,
or with an undefined value, are grey and never set a panel's range (`style.draw_apart`).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import seaborn as sns

from bench.plots.files import MAX_SIDE_IN, page_path, save_png
from bench.plots.style import (APART_NOTE, LEGEND_FONT, Style, apart, attacker_labels, attacker_order, ci_bars,
                               config_names, config_styles, draw_apart, draw_point, focus_x, paged, panel_grid,
                               text_width)
from bench.results.keys import GROUP

ATTACKER_COLUMNS = 3
ATTACKER_PANEL_WIDTH = 3.2
# Inches a panel needs besides its rows of configurations (title, x ticks and label), and each row.
ATTACKER_PANEL_FRAME, ATTACKER_ROW = 0.9, 0.24
ATTACKER_MIN_WIDTH = 7.0


def attacker_figures(agg, out_dir: Path) -> list[Path]:
    """attackers-<dataset>.png: one panel per attacker, one row per defense configuration; as many
    pages as it takes to keep each within MAX_SIDE_PX."""
    paths = []
    sns.set_theme(style="whitegrid")
    for ds, rows in agg.groupby("dataset", sort=True):
        measured = _attacker_measures(rows)
        if measured.empty:
            continue
        styles = config_styles(rows)
        names = [n for n in styles if n in set(measured.config)]
        whos = attacker_order(measured)
        panel_height = ATTACKER_PANEL_FRAME + ATTACKER_ROW * len(names)
        rows_per_page = max(1, int((MAX_SIDE_IN - 0.5) // panel_height))
        for page, page_whos in enumerate(paged(whos, rows_per_page * ATTACKER_COLUMNS), 1):
            paths.append(_attacker_page(measured[measured.who.isin(page_whos)], rows, ds, page_whos, names, styles,
                                        page_path(out_dir, "attackers", ds, page)))
    return paths


def _has_defended(rows) -> bool:
    return bool((rows.defense != "identity").any())


def _attacker_measures(rows):
    """What the per-attacker figure of one dataset shows, with `config` and `who` columns: the leakage
    of each defense configuration (identity's is 1 by definition: drawn as a line); on identity alone,
    what each attacker reaches: accuracy (classifiers) or SSIM (inversion)."""
    if _has_defended(rows):
        d = rows[(rows.metric == "leakage") & (rows.defense != "identity")]
        d = pd.concat([d, _undefined_leakage(rows, d)], ignore_index=True)
    else:
        d = rows[(rows.metric == "attack_acc") | ((rows.metric == "ssim") & (rows.attacker == "inversion"))]
    return d.assign(config=config_names(d), who=attacker_labels(d))


def _undefined_leakage(rows, leakage):
    """A row with a NaN leakage for each cell that was measured (it has other metrics) by an attacker that
    reports leakage elsewhere, but has none: its identity twin learnt nothing, so the ratio is undefined
    and its record leaves it out. Shown as undefined rather than left as an empty row."""
    cells = rows[(rows.defense != "identity") & rows.attacker.isin(set(leakage.attacker))]
    cells = cells.drop_duplicates(GROUP).set_index(GROUP)
    missing = cells[~cells.index.isin(leakage.set_index(GROUP).index)].reset_index()
    return missing.assign(metric="leakage", mean=math.nan, ci95_low=math.nan, ci95_high=math.nan)


def _attacker_page(measured, rows, ds: str, whos: list[str], names: list[str], styles: dict[str, Style],
                   path: Path) -> Path:
    has_defended = _has_defended(rows)
    columns = min(ATTACKER_COLUMNS, len(whos))
    labels_width = text_width(max(map(len, names)))
    # At least as wide as the title, with one panel.
    extra_width = max(labels_width, ATTACKER_MIN_WIDTH - columns * ATTACKER_PANEL_WIDTH)
    fig, axes = panel_grid(len(whos), columns, (ATTACKER_PANEL_WIDTH, ATTACKER_PANEL_FRAME + ATTACKER_ROW * len(names)),
                        extra=(extra_width, 0.8), sharey=True)
    levels = {} if has_defended else _chance_levels(rows)
    position = {name: i for i, name in enumerate(names)}
    any_apart = False
    for ax, who in zip(axes, whos):
        attacks = measured[measured.who == who]
        off = apart(attacks)
        any_apart |= bool(off.any())
        counted = attacks[~off]
        for r, ci in zip(counted.itertuples(), ci_bars(counted).T):
            draw_point(ax, r.mean, position[r.config], styles[r.config], xerr=ci.reshape(2, 1))
        if has_defended:
            ax.axvline(0, color="grey", lw=0.8)
            references, xlabel = [0.0, 1.0], "leakage (dashed: no defense)"
        else:
            reached = "SSIM" if (attacks.metric == "ssim").all() else "accuracy"
            references = [levels[who]] if who in levels else []
            xlabel = f"{reached} (dashed: {'mean image' if reached == 'SSIM' else 'chance'})"
        if references:
            ax.axvline(references[-1], color="black", ls="--", lw=1)
        # Only calibrated, defined cells set the range: one weak attacker's 57 would flatten every other point.
        focus_x(ax, [*counted["mean"], *references], [*counted.ci95_low, *counted.ci95_high])
        for r in attacks[off].itertuples():
            draw_apart(ax, r.mean, position[r.config], (r.ci95_low, r.ci95_high), styles[r.config].marker)
        ax.set_xlabel(xlabel, fontsize=9)
        derivable = "derivable" in attacks and attacks.derivable.all()
        ax.set_title(who + (" (derivable: never a worst case)" if derivable else ""), fontsize=10)
    axes[0].set_yticks(range(len(names)), names)
    for ax in axes:  # the shared ticks are labelled on the first panel of each row
        ax.tick_params(axis="y", labelsize=LEGEND_FONT)
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # the first configuration on top
    what = "leakage per attacker" if has_defended else "what each attacker reaches with no defense"
    fig.suptitle(f"{ds}: {what} (mean over seeds, 95 % CI)", fontsize=12)
    if any_apart:
        fig.supxlabel(APART_NOTE, fontsize=8)
    return save_png(fig, path)


def _chance_levels(rows) -> dict[str, float]:
    """Attacker label -> what its accuracy means nothing above (the majority class of its task), or
    for inversion the SSIM of the mean image. Several identity configurations (e.g. capped and
    uncapped) share one attacker label: one level each."""
    chance = rows[rows.metric.isin(["chance", "ssim_chance"]) & (rows.defense == "identity")]
    # Inversion reports no `chance`; a classifier no `ssim_chance`: one level per attacker either way.
    return chance.assign(who=attacker_labels(chance)).groupby("who")["mean"].mean().to_dict()
