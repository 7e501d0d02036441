"""Layout and style shared by every figure: small multiples, legends beside or below the data,
and one look per configuration (its defense's colour family, its own marker) in every figure.

A configuration is named by its label in the tables (`params.label_book`: what differs from the
defaults it first ran under, with human values: `fmd(eps=8/255) [500 released]`).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.transforms import offset_copy

from bench.params import config_label, labels_of, setting_label
from bench.plots.files import MAX_SIDE_IN
from bench.registry import ATTACKERS, DEFENSES

# Entries per legend column: a longer legend wraps into another column instead of running off the figure.
LEGEND_ROWS = 24
LEGEND_FONT = 8
LEGEND_ROW = 0.2  # inches a legend entry takes in height
# A legend with more entries goes below its panel (`legend_below`), not beside it; a longer name is wrapped.
LEGEND_BESIDE = 10
LEGEND_WRAP = 24
# Inches between the bottom of a panel and a legend under it: its tick labels and x label.
LEGEND_BELOW_GAP = 0.5
# One marker per configuration of a defense; with more configurations than markers, shade still tells them apart.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
# The no-defense reference is neutral, so that every colour means a defense.
IDENTITY_COLOUR = (0.3, 0.3, 0.3)
# A cell that is shown but decides nothing (a weak attacker, an undefined value): a light grey, hollow.
APART_COLOUR = (0.6, 0.6, 0.6)
APART_NOTE = ("grey, hollow: a weak attacker (never a worst case) or an undefined value\n"
              "an arrow at the edge: a value off the axis, written beside it")
APART_LEGEND = "grey, hollow: a weak attacker (never a worst case) or undefined; an arrow: off the axis"


@dataclass(frozen=True)
class Style:
    """How one configuration (or one series) is drawn: its defense's colour family and its own marker."""
    colour: tuple
    marker: str


def capped_size(width: float, height: float) -> tuple[float, float]:
    """A figure size in inches whose long side is at most MAX_SIDE_PX at DPI: past it, the panels get smaller."""
    return min(width, MAX_SIDE_IN), min(height, MAX_SIDE_IN)


def panel_grid(n: int, columns: int, panel_size: tuple[float, float], extra: tuple[float, float] = (0, 0),
            **subplot_kw):
    """A figure of `n` panels wrapped into rows of `columns`, and its `n` axes; `extra` inches for what is
    not a panel (tick labels, legends, title). Constrained layout makes room for legends beside the axes."""
    rows = math.ceil(n / columns)
    width, height = panel_size
    fig, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                             figsize=capped_size(columns * width + extra[0], rows * height + extra[1]), **subplot_kw)
    axes = list(axes.flat)
    for spare in axes[n:]:
        spare.set_visible(False)
    return fig, axes[:n]


def paged(items: list, per_page: int) -> list[list]:
    return [items[i:i + per_page] for i in range(0, len(items), per_page)]


def legend_column_count(n_entries: int) -> int:
    return max(1, math.ceil(n_entries / LEGEND_ROWS))


def legend_beside(ax) -> None:
    """The axes' legend to their right, outside the data."""
    n = len(ax.get_legend_handles_labels()[0])
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=LEGEND_FONT,
              ncol=legend_column_count(n))


def legend_below(ax, panel_width: float) -> None:
    """The axes' legend under their x label, in as many columns as `panel_width` inches hold, filled row by
    row: a legend of more than LEGEND_BESIDE entries beside a panel would take as much width as the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # A fixed distance under the axes (their tick labels and x label), whatever the panel's height.
        under = offset_copy(ax.transAxes, ax.figure, y=-LEGEND_BELOW_GAP, units="inches")
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=under,
                  borderaxespad=0, fontsize=LEGEND_FONT, ncol=_below_columns(labels, panel_width))


def legend_below_height(labels: list[str], panel_width: float) -> float:
    """Inches that `legend_below` takes under a panel `panel_width` wide, about."""
    if not labels:
        return 0.0
    rows = math.ceil(len(labels) / _below_columns(labels, panel_width))
    wrapped_lines = sum(label.count("\n") for label in labels)
    return LEGEND_BELOW_GAP + 0.15 + LEGEND_ROW * rows + 0.6 * LEGEND_ROW * wrapped_lines


def _below_columns(labels: list[str], panel_width: float) -> int:
    return max(1, min(len(labels), int(panel_width // line_widths(labels))))


def line_widths(labels: list[str]) -> float:
    """Inches the widest line of `labels` takes as a legend entry (a wrapped label is as wide as its longest line)."""
    return text_width(max(len(line) for label in labels for line in label.split("\n")))


def wrapped(label: str, width: int = LEGEND_WRAP) -> str:
    """A long configuration name on two or more lines, broken after its commas and before its setting
    (`[500 released]`), so that one long name does not set the width of every legend column."""
    if len(label) <= width:
        return label
    parts = re.split(r"(?<=, )|(?= \[)", label)
    lines, line = [], ""
    for part in parts:
        if line and len(line + part) > width:
            lines.append(line.rstrip())
            line = part.lstrip()
        else:
            line += part
    return "\n".join([*lines, line])


def text_width(chars: int, fontsize: float = LEGEND_FONT) -> float:
    """Inches that a legend entry or tick label of `chars` characters takes, about (DejaVu Sans: ~0.55 em a
    character, plus the marker)."""
    return 0.6 + chars * 0.55 * fontsize / 72


def defense_colour(defense: str) -> tuple:
    """A defense's colour in every figure: tab10 in the order of the installed defenses (grey is kept
    for identity); a defense no longer installed gets one from its name."""
    if defense == "identity":
        return IDENTITY_COLOUR
    palette = [c for i, c in enumerate(sns.color_palette("tab10")) if i != 7]  # tab10's 7 is grey
    installed = [name for name in DEFENSES.names() if name != "identity"]
    index = installed.index(defense) if defense in installed else int(hashlib.sha256(defense.encode()).hexdigest(), 16)
    return tuple(palette[index % len(palette)])


def colour_family(colour: tuple, n: int) -> list[Style]:
    """`n` styles of one colour family, from lighter to darker, each with its own marker: the
    configurations of one defense are told apart and still read as that defense."""
    if n == 1:
        return [Style(tuple(colour), MARKERS[0])]
    styles = []
    for i, t in enumerate(np.linspace(-0.45, 0.35, n)):
        towards = np.ones(3) if t < 0 else np.zeros(3)  # lighter: mix with white; darker: with black
        shade = (1 - abs(t)) * np.asarray(colour[:3]) + abs(t) * towards
        styles.append(Style(tuple(shade), MARKERS[i % len(MARKERS)]))
    return styles


def config_names(rows) -> list[str]:
    """Each row's configuration as every table of its results dir names it (its `defense_label`, see
    `bench.params.labels_of`) with its setting (`[500 released]`)."""
    labels = labels_of(rows)
    return [labels[d, p] + setting_label(e, m)
            for d, p, e, m in zip(rows.defense, rows.defense_params, rows.eval_split, rows.max_release)]


def config_styles(rows) -> dict[str, Style]:
    """Configuration name -> style, for the configurations in `rows` (one dataset's), in the order
    figures list them: identity first, then by defense, each in numeric order of its hyperparameters."""
    order: dict[str, dict[str, tuple]] = {}
    configs = rows.drop_duplicates(["defense", "defense_params", "eval_split", "max_release"])
    for r, name in zip(configs.itertuples(), config_names(configs)):
        key = (config_order(r.defense, json.loads(r.defense_params)), r.eval_split, int(r.max_release or 0))
        order.setdefault(r.defense, {}).setdefault(name, key)
    styles = {}
    for defense in sorted(order, key=lambda d: (d != "identity", d)):
        names = sorted(order[defense], key=lambda name: (order[defense][name], name))
        styles.update(zip(names, colour_family(defense_colour(defense), len(names))))
    return styles


def draw_point(ax, x, y, style: Style, label: str | None = None, **errors) -> None:
    """One configuration's mean with its 95 % CI (`xerr` or `yerr`), in its style."""
    ax.errorbar(x, y, fmt=style.marker, color=style.colour, ms=7, mec="black", mew=0.5, capsize=3, label=label,
                **errors)


def ci_bars(rows, mean: str = "mean", low: str = "ci95_low", high: str = "ci95_high") -> np.ndarray:
    """Error-bar lengths below and above the mean; never negative (a CI may sit on one side of a clipped mean)."""
    m = rows[mean].to_numpy(dtype=float)
    return np.vstack([np.maximum(m - rows[low].to_numpy(dtype=float), 0),
                      np.maximum(rows[high].to_numpy(dtype=float) - m, 0)])


def focus_x(ax, core: list[float], ci_ends: list[float]) -> None:
    """x limits that show every mean and reference level, and of the CIs at most half that span again on
    either side: one CI hundreds wide (a ratio over a near-chance reference) would squash every point into one."""
    focus(ax, core, ci_ends, "x")


def focus(ax, core: list[float], ci_ends: list[float], axis: str) -> None:
    """`focus_x` on either axis; the limits are fixed, so nothing drawn afterwards moves them."""
    core = [v for v in core if np.isfinite(v)]
    ends = [v for v in ci_ends if np.isfinite(v)]
    if not core:
        return
    low, high = min(core), max(core)
    reach = 0.5 * ((high - low) or 1.0)
    low, high = max(low - reach, min([low, *ends])), min(high + reach, max([high, *ends]))
    pad = 0.05 * ((high - low) or 1.0)
    (ax.set_xlim if axis == "x" else ax.set_ylim)(low - pad, high + pad)


def apart(rows, mean: str = "mean", low: str = "ci95_low", high: str = "ci95_high") -> np.ndarray:
    """Which rows are drawn apart (`draw_apart`) and never set an axis's range: those of an attacker flagged
    `weak_attacker` (the tables keep them out of every worst case), and those whose mean or CI is not a
    finite number."""
    values = rows[[mean, low, high]].to_numpy(dtype=float)
    weak = rows["weak_attacker"].to_numpy(dtype=bool) if "weak_attacker" in rows else np.zeros(len(rows), bool)
    return weak | ~np.isfinite(values).all(axis=1)


def draw_apart(ax, value: float, at: float, ci: tuple[float, float], marker: str, axis: str = "x") -> None:
    """A cell drawn apart, in grey and hollow, at `value` on `axis` and `at` on the other, once the axis's
    limits are set: inside them where it is; outside them as an arrow at the edge with the value written
    beside it, and its CI cut at the edges. An undefined value is written, not placed."""
    low, high = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())

    def xy(v: float, a: float) -> tuple[float, float]:
        return (v, a) if axis == "x" else (a, v)

    if np.isfinite(ci).all():
        ends = np.clip(np.asarray(ci, dtype=float), low, high)
        if ends[1] > ends[0]:
            ax.plot(*zip(xy(ends[0], at), xy(ends[1], at)), color=APART_COLOUR, lw=1, zorder=1.5)
    if np.isnan(value):
        ax.annotate("undefined", xy((low + high) / 2, at), ha="center", va="center", fontsize=7,
                    color=APART_COLOUR)
        return
    if low <= value <= high:
        ax.plot(*xy(value, at), marker=marker, ms=7, mfc="white", mec=APART_COLOUR, mew=1.2, ls="none", zorder=2)
        return
    above = value > high
    arrow = (">" if above else "<") if axis == "x" else ("^" if above else "v")
    ax.plot(*xy(high if above else low, at), marker=arrow, ms=8, color=APART_COLOUR, ls="none", clip_on=False,
            zorder=3)
    if axis == "x":  # the value inside the panel, beside its arrow
        # Above its row's line: a CI cut at both edges runs through the row's middle.
        offset, ha, va = ((-8, 1), "right", "bottom") if above else ((8, 1), "left", "bottom")
    else:
        offset, ha, va = ((6, -4 if above else 4), "left", "top" if above else "bottom")
    ax.annotate(f"{value:.3g}", xy(high if above else low, at), xytext=offset, textcoords="offset points",
                ha=ha, va=va, fontsize=7, color=(0.35, 0.35, 0.35),
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})


def attacker_labels(rows, params: str = "attacker_params") -> list[str]:
    """`transfer(archs=cnn)[class]`: attacker, its non-default settings (column `params`) and its task,
    one per row; computed once per attacker configuration, as naming one reads its plugin's defaults."""
    if params == "attacker_params":
        labels = labels_of(rows, "attacker", ATTACKERS)
        return [f"{labels[a, p]}[{t}]" for a, p, t in zip(rows.attacker, rows.attacker_params, rows.attack_task)]
    keys = list(zip(rows.attacker, rows[params], rows.attack_task))
    labels = {(a, p, t): f"{config_label(a, p, ATTACKERS)}[{t}]" for a, p, t in set(keys)}
    return [labels[key] for key in keys]


def attacker_order(rows, params: str = "attacker_params") -> list[str]:
    """The distinct `who` labels of `rows`, by attacker, then in numeric order of its settings
    (budget=20 before budget=100), then by task."""
    keys = {}
    for who, attacker, p, task in zip(rows.who, rows.attacker, rows[params], rows.attack_task):
        keys.setdefault(who, (attacker, config_order(attacker, json.loads(p)), task))
    return sorted(keys, key=keys.get)


def config_order(defense: str, params: dict) -> tuple:
    """Configurations of one defense in numeric order of their hyperparameters (lam=2 before lam=10)."""
    return defense, tuple((k, (0, v, "") if is_number(v) else (1, 0, json.dumps(v)))
                          for k, v in sorted(params.items()))


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
