"""Layout and style shared by every figure: small multiples, legends beside or below the data,
and one look per configuration (its defense's colour family, its own marker) in every figure.

A configuration is named by `config_label` + `setting_label` (what differs from the defaults,
with human values: `fmd(eps=8/255) [500 released]`).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from bench.params import config_label, setting_label
from bench.plots.files import MAX_SIDE_IN
from bench.registry import ATTACKERS, DEFENSES

# Entries per legend column: a longer legend wraps into another column instead of running off the figure.
LEGEND_ROWS = 24
LEGEND_FONT = 8
LEGEND_ROW = 0.2  # inches a legend entry takes in height
# One marker per configuration of a defense; with more configurations than markers, shade still tells them apart.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
# The no-defense reference is neutral, so that every colour means a defense.
IDENTITY_COLOUR = (0.3, 0.3, 0.3)


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


def config_name(defense: str, params: str, eval_split: str, max_release) -> str:
    """`fmd(eps=8/255) [500 released]`: how a configuration is named in every figure."""
    return config_label(defense, params) + setting_label(eval_split, max_release)


def config_names(rows) -> list[str]:
    """`config_name` of each row; computed once per configuration, as naming one reads its plugin's defaults."""
    keys = list(zip(rows.defense, rows.defense_params, rows.eval_split, rows.max_release))
    names = {key: config_name(*key) for key in set(keys)}
    return [names[key] for key in keys]


def config_styles(rows) -> dict[str, Style]:
    """Configuration name -> style, for the configurations in `rows` (one dataset's), in the order
    figures list them: identity first, then by defense, each in numeric order of its hyperparameters."""
    order: dict[str, dict[str, tuple]] = {}
    for r in rows[["defense", "defense_params", "eval_split", "max_release"]].drop_duplicates().itertuples():
        key = (config_order(r.defense, json.loads(r.defense_params)), r.eval_split, int(r.max_release or 0))
        order.setdefault(r.defense, {}).setdefault(config_name(r.defense, r.defense_params, r.eval_split,
                                                                r.max_release), key)
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
    core = [v for v in core if np.isfinite(v)]
    ends = [v for v in ci_ends if np.isfinite(v)]
    if not core:
        return
    low, high = min(core), max(core)
    reach = 0.5 * ((high - low) or 1.0)
    low, high = max(low - reach, min([low, *ends])), min(high + reach, max([high, *ends]))
    pad = 0.05 * ((high - low) or 1.0)
    ax.set_xlim(low - pad, high + pad)


def attacker_labels(rows, params: str = "attacker_params") -> list[str]:
    """`transfer(archs=cnn)[class]`: attacker, its non-default settings (column `params`) and its task,
    one per row; computed once per attacker configuration, as naming one reads its plugin's defaults."""
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
