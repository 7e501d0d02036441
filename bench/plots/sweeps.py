"""sweep-<dataset>-<defense>-<param>.png: for a defense run at several values of one numeric
hyperparameter (all else equal, e.g. `--set arl.lam=0,0.1,1`), utility and each attack against
that value, with the no-defense and chance levels for reference.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

from bench.errors import BenchError
from bench.params import config_label, param_text, setting_label
from bench.plots.files import plot_path, save_png
from bench.plots.style import (LEGEND_FONT, ci_bars, colour_family, config_order, defense_colour, is_number,
                               legend_beside, panel_grid)
from bench.registry import ATTACKERS, DEFENSES
from bench.results.keys import CONFIG
from bench.results.tables import aggregate

# (metric, attacker or None for the designated model, panel title) of a sweep figure.
SWEEP_PANELS = (
    ("utility_acc", None, "utility (designated model)"),
    ("release_psnr", None, "released vs input PSNR (dB)"),
    ("attack_acc", "transfer", "transfer accuracy (best model)"),
    ("psnr", "inversion", "inversion PSNR (dB)"),
    ("ssim", "inversion", "inversion SSIM"),
    ("attack_acc", "attribute", "attribute attack accuracy"),
    ("attack_acc", "adaptive", "adaptive attack accuracy"),
)
CHANCE_METRIC = {"attack_acc": "chance", "psnr": "psnr_chance", "ssim": "ssim_chance"}
# What else, besides the defense's hyperparameters, tells two configurations on one dataset apart.
SWEEP_CONTEXT = [c for c in CONFIG if c not in ("defense", "defense_params", "dataset")]


def sweep_lines(configs) -> dict[str, list[dict]]:
    """param -> lines; a line holds the configurations that differ only in that numeric param.

    `configs`: distinct (defense_params, *SWEEP_CONTEXT) rows of one defense on one dataset.
    A line needs at least two values; configurations that differ in two things at once
    (e.g. lam and rec together) form no line.
    """
    parsed = [(json.loads(r.defense_params), tuple(getattr(r, c) for c in SWEEP_CONTEXT), r.defense_params)
              for r in configs.itertuples()]
    names = set().union(*(p.keys() for p, _, _ in parsed)) if parsed else set()
    out = {}
    for param in sorted(names):
        if not all(param in p and is_number(p[param]) for p, _, _ in parsed):
            continue
        buckets: dict[tuple, dict] = {}
        for p, context, params_json in parsed:
            others = json.dumps({k: v for k, v in p.items() if k != param}, sort_keys=True)
            line = buckets.setdefault((context, others), {"context": dict(zip(SWEEP_CONTEXT, context)),
                                                          "others": json.loads(others), "points": {}})
            line["points"][p[param]] = params_json
        lines = [line for line in buckets.values() if len(line["points"]) >= 2]
        if lines:
            out[param] = lines
    return out


def _varying(dicts: list[dict]) -> list[str]:
    return sorted(k for k in set().union(*dicts) if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1)


def sweep_figures(long, agg, out_dir: Path) -> list[Path]:
    cols = ["dataset", "defense", "defense_params", *SWEEP_CONTEXT]
    configs = agg[agg.defense != "identity"][cols].drop_duplicates()
    paths = []
    for (ds, defense), group in configs.groupby(["dataset", "defense"], sort=True):
        for param, lines in sweep_lines(group).items():
            seeds, line_agg = on_common_seeds(long[long.dataset == ds], defense, lines)
            paths.append(_sweep_figure(line_agg, ds, defense, param, lines, seeds,
                                       plot_path(out_dir, "sweep", ds, defense, param)))
    return [p for p in paths if p is not None]


def on_common_seeds(long, defense: str, lines: list[dict]) -> tuple[list[int], "object"]:
    """The seeds every point of the sweep has, and the aggregate over those seeds only.

    A point run on three seeds next to points run on one would otherwise compare a
    mean with single values: the line would show the seeds' spread, not the sweep.
    """
    def seeds_of(line: dict, params: str) -> set:
        rows = long[(long.defense == defense) & (long.defense_params == params)]
        for column, value in line["context"].items():  # e.g. the same config also run on val or capped
            rows = rows[rows[column] == value]
        return set(rows.seed)

    per_point = [seeds_of(line, params) for line in lines for params in line["points"].values()]
    seeds = sorted(set.intersection(*per_point)) if per_point else []
    # Only this defense and its identity references are drawn: aggregate nothing else.
    return seeds, aggregate(long[long.seed.isin(seeds) & long.defense.isin([defense, "identity"])])


def _sweep_series(agg, line: dict, metric: str, attacker: str | None) -> list[tuple[dict, "object"]]:
    """One (series key, rows sorted by the swept value) per attacker configuration of this line."""
    in_context = np.logical_and.reduce([agg[c] == v for c, v in line["context"].items()])
    rows = agg[in_context & (agg.metric == metric) & agg.defense_params.isin(line["points"].values())]
    if attacker is None:
        # Utility does not depend on the attacker: every run of a configuration reports the same
        # numbers, so take the attacker group with the most seeds.
        rows = rows.sort_values(["n", "attacker"], ascending=[False, True]).drop_duplicates("defense_params")
        groups = [({}, rows)]
    else:
        rows = rows[rows.attacker == attacker]
        groups = [({"attacker_params": a, "attack_task": t}, g)
                  for (a, t), g in rows.groupby(["attacker_params", "attack_task"], sort=True)]
        # budget=20 before budget=100
        groups.sort(key=lambda group: (config_order(attacker, json.loads(group[0]["attacker_params"])),
                                       group[0]["attack_task"]))
    value_of = {v: k for k, v in line["points"].items()}
    return [(key, g.assign(x=g.defense_params.map(value_of)).sort_values("x")) for key, g in groups if len(g)]


def _reference(agg, line: dict, key: dict, metric: str, attacker: str | None) -> float | None:
    """The identity (no defense) level of `metric` in this line's context, if it was run."""
    in_context = np.logical_and.reduce([agg[c] == v for c, v in line["context"].items()])
    rows = agg[in_context & (agg.defense == "identity") & (agg.metric == metric)]
    if attacker is not None:
        rows = rows[(rows.attacker == attacker) & (rows.attacker_params == key["attacker_params"])
                    & (rows.attack_task == key["attack_task"])]
    return float(rows.sort_values("n", ascending=False)["mean"].iloc[0]) if len(rows) else None


def _param_value(defense: str, param: str, value) -> str:
    """One hyperparameter value as `config_label` writes it (`16/255` for fmd's eps, else 3 significant digits)."""
    try:
        scale = getattr(DEFENSES.get(defense), "param_scales", {}).get(param)
    except BenchError:  # a plugin no longer installed: the plain value
        scale = None
    return param_text(value, scale)


def _sweep_scale(ax, defense: str, param: str, values: list[float]) -> None:
    values = sorted(values)
    positive = [v for v in values if v > 0]
    if values[0] > 0 and values[-1] / values[0] >= 4:  # e.g. eps = 4, 8, 16, 32 (/255): evenly spaced in log
        ax.set_xscale("log")
    elif values[0] == 0 and len(positive) >= 2 and positive[-1] / positive[0] > 10:
        # A sweep that starts at 0 (no defense term) and then spans decades, e.g. lam = 0, 0.01, 0.1, 1:
        # linear below the smallest positive value, logarithmic above, so every point stays readable.
        ax.set_xscale("symlog", linthresh=positive[0])
        # Autoscaling would mirror the log part into empty negative decades.
        ax.set_xlim(-0.3 * positive[0], positive[-1] * 1.5)
    ax.minorticks_off()
    labelled = _spaced(values, ax.xaxis.get_transform().transform(np.asarray(values, dtype=float)))
    ax.set_xticks(values, [_param_value(defense, param, v) if v in labelled else "" for v in values],
                  rotation=30 if len(labelled) > 5 else 0)


def _spaced(values: list[float], positions: np.ndarray) -> set[float]:
    """The values whose tick gets a label: each at least 1/SWEEP_TICK_LABELS of the axis from the last
    labelled one, so that labels of a dense sweep (or of the crowded end of a log axis) do not overlap."""
    gap = (positions[-1] - positions[0]) / SWEEP_TICK_LABELS
    labelled, last = set(), None
    for value, position in zip(values, positions):
        if last is None or position - last >= gap:
            labelled.add(value)
            last = position
    return labelled


def _series_label(defense: str, attacker: str | None, described: dict, keys: list[str]) -> str:
    """What tells a sweep's series apart, named as the tables name it: `lam=0.1`, `[500 released]`,
    `transfer(archs=cnn)`, `[Smiling]`."""
    parts = []
    for k in keys:
        if k == "attacker_params":
            parts.append(config_label(attacker, described[k], ATTACKERS))
        elif k == "attack_task":
            parts.append(f"[{described[k]}]")
        elif k in ("eval_split", "max_release"):
            setting = setting_label(described.get("eval_split", "test"), described.get("max_release"))
            parts.append(setting.strip() or "[test, every image released]")
        elif k in SWEEP_CONTEXT:
            parts.append(f"{k}={described[k]}")
        else:  # another hyperparameter of the defense
            parts.append(f"{k}={_param_value(defense, k, described[k])}")
    return " ".join(dict.fromkeys(parts))  # eval_split and max_release name one setting together


SWEEP_COLUMNS = 4
SWEEP_TICK_LABELS = 8  # labelled values on a sweep's axis, at most about
SWEEP_PANEL = (4.0, 3.3)


def _sweep_figure(agg, ds: str, defense: str, param: str, lines: list[dict], seeds: list[int],
                  path: Path) -> Path | None:
    panels = []
    for metric, attacker, title in SWEEP_PANELS:
        series = [(line, key, rows) for line in lines for key, rows in _sweep_series(agg, line, metric, attacker)]
        if series:
            panels.append((metric, attacker, title, series))
    if not panels:
        return None
    # Lines are labelled by what tells them apart: other hyperparameters, context, attacker settings.
    line_keys = [{**line["others"], **line["context"]} for line in lines]
    line_varying = _varying(line_keys)
    values = sorted({v for line in lines for v in line["points"]})
    sns.set_theme(style="whitegrid")
    fig, axes = panel_grid(len(panels), min(SWEEP_COLUMNS, len(panels)), SWEEP_PANEL, extra=(0, 0.9))
    for ax, (metric, attacker, title, series) in zip(axes, panels):
        attacker_varying = _varying([key for _, key, _ in series])
        styles = colour_family(defense_colour(defense), len(series))
        for style, (line, key, rows) in zip(styles, series):
            described = {**line["others"], **line["context"], **key}
            label = _series_label(defense, attacker, described, line_varying + attacker_varying)
            ax.errorbar(rows["x"], rows["mean"], yerr=ci_bars(rows), fmt="-" + style.marker, ms=5, mec="black", mew=0.5,
                        capsize=3, color=style.colour, label=label or None)
            reference = _reference(agg, line, key, metric, attacker)
            if reference is not None:
                ax.axhline(reference, color=style.colour, ls="--", lw=1)
            if metric in CHANCE_METRIC:
                chance = _sweep_series(agg, line, CHANCE_METRIC[metric], attacker)
                level = [r["mean"].mean() for k, r in chance if k == key]
                if level:
                    ax.axhline(level[0], color=style.colour, ls=":", lw=1)
        _sweep_scale(ax, defense, param, values)
        ax.set_xlabel(f"{defense}.{param}")
        ax.set_title(title, fontsize=10)
        if len(series) > 1:
            legend_beside(ax)
    on = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}, 95 % CI"
    fig.legend(*_sweep_line_kinds(on), loc="outside lower center", ncol=3, fontsize=LEGEND_FONT)
    fig.suptitle(f"{ds}: {defense} over {param} ({on}: the seeds every point has)", fontsize=11)
    return save_png(fig, path)


def _sweep_line_kinds(measured: str) -> tuple[list, list[str]]:
    """Legend handles and labels for what the kinds of line in a sweep mean, once for all panels."""
    return ([Line2D([], [], color="black", marker="o", ms=5), Line2D([], [], color="black", ls="--", lw=1),
             Line2D([], [], color="black", ls=":", lw=1)],
            [f"measured ({measured})", "no defense (identity)", "chance (attacks) / mean image (inversion)"])
