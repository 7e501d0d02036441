"""Figures written after every run and by `python -m bench plot`.

- tradeoff.png: utility vs worst-case leakage, one point per defense configuration
  (error bars: 95 % CI of the worst attacker), one panel per dataset;
- attackers-<dataset>.png: one panel per attacker, one row per defense configuration: its
  leakage with the 95 % CI (with no defense run on the dataset: the attacker's accuracy, SSIM
  for inversion, against chance); a CI far wider than the spread of the points runs off the panel;
- grid-<dataset>.png: original / released / inverted test images per defense configuration;
- sweep-<dataset>-<defense>-<param>.png: for a defense run at several values of one numeric
  hyperparameter (all else equal, e.g. `--set arl.lam=0,0.1,1`), utility and each attack
  against that value, with the no-defense and chance levels for reference;
- budget-<dataset>.png: for attackers run at two or more budgets, leakage against the number of
  labelled released images the attacker learnt from, one panel per attacker.

Readable however many configurations and attackers the results hold: every figure is small
multiples wrapped into rows of a few panels, with legends beside or below the axes (never over
the data), and is at most MAX_SIDE_PX pixels on its long side. Attacker panels or image rows
beyond what fits go on further pages (`attackers-<dataset>-p2.png`, `budget-<dataset>-p2.png`,
`grid-<dataset>-p2.png`, ...).
A configuration is named by `config_label` + `setting_label` (what differs from the defaults,
with human values: `fmd(eps=8/255) [500 released]`); a defense has the same colour in every
figure, its configurations shades of it, each with its own marker.

Every file name is made in `plot_path`: names taken from run records (datasets, defenses,
hyperparameters) become file-name slugs, so whatever a record says, a figure is written
inside `plots/` and nowhere else; figures are written atomically (a symlink already at a
figure's name is replaced, never written through).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.registry import ATTACKERS, DEFENSES  # noqa: E402
from bench.storage import atomic_write_bytes  # noqa: E402
from bench.results import (CONFIG, param_text, aggregate, config_label, load_runs, recorded_params,  # noqa: E402
                           setting_label, write_leaderboards)

DPI = 120
# The long side of every figure, in pixels, at most: a figure wider or taller is not read but scrolled.
MAX_SIDE_PX = 2500
MAX_SIDE_IN = MAX_SIDE_PX / DPI
# Entries per legend column: a longer legend wraps into another column instead of running off the figure.
LEGEND_ROWS = 24
LEGEND_FONT = 8
LEGEND_ROW = 0.2  # inches a legend entry takes in height
# One marker per configuration of a defense; with more configurations than markers, shade still tells them apart.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
# The no-defense reference is neutral, so that every colour means a defense.
IDENTITY_COLOUR = (0.3, 0.3, 0.3)

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


def write_plots(results_dir: Path) -> list[Path]:
    """Regenerate the leaderboards and every figure; the paths written.

    Everything that can be refused (a bad record, a bad sample, a `plots` that leads outside the
    results dir) is checked before the first file is written.
    """
    results_dir = Path(results_dir)
    out_dir = results_dir / "plots"
    runs = load_runs(results_dir)
    grids = _grid_inputs(results_dir, runs)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise BenchError(f"{out_dir} is not a directory inside {results_dir} (a symlink or a file): the plots are "
                         "written only there; remove it")
    tables = write_leaderboards(results_dir, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        if not tables["agg"].empty:
            written.append(_tradeoff(tables["worst"], tables["agg"], plot_path(out_dir, "tradeoff")))
            written += _attacker_figures(tables["agg"], out_dir)
            written += _sweeps(tables["long"], tables["agg"], out_dir)
            written += _budgets(tables["agg"], out_dir)
        written += _grids(grids, out_dir)
    finally:
        plt.close("all")
    return [p for p in written if p is not None]


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]+")


def slug(text) -> str:
    """`text` as one safe file-name component: itself when it already is one (`fashion-mnist`,
    `lam`), else its safe characters and a short hash of the original (`../../x` -> `x-9cdf6a50`,
    `a/b` -> `a_b-c14cddc0`), so two names never share a slug and nothing like `..` or `/` survives."""
    text = str(text)
    safe = _UNSAFE.sub("_", text).strip("._-")[:60]
    if safe == text and text:
        return text
    return (safe + "-" if safe else "") + hashlib.sha256(text.encode()).hexdigest()[:8]


def plot_path(out_dir: Path, *parts) -> Path:
    """`out_dir/<part>-<part>-....png`, every part a `slug`; refused if it could lie anywhere but in `out_dir`."""
    name = "-".join(slug(p) for p in parts) + ".png"
    path = Path(out_dir) / name
    if path.parent != Path(out_dir) or path.name != name or name.startswith("."):
        raise BenchError(f"refusing to write plot {name!r}: not a plain file name in {out_dir}")
    return path


def page_path(out_dir: Path, kind: str, dataset: str, page: int) -> Path:
    """`<kind>-<dataset>.png` for the first page of a figure, `<kind>-<dataset>-p<page>.png` after it."""
    return plot_path(out_dir, kind, dataset, *([f"p{page}"] if page > 1 else []))


def _save(fig, path: Path, **kwargs) -> Path:
    """The figure as PNG at `path`, atomically; a symlink there is replaced, not followed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, **kwargs)
    finally:
        plt.close(fig)  # a results dir with many datasets would otherwise hold every figure until the end
    atomic_write_bytes(path, buf.getvalue())
    return path


# --- layout and style shared by the figures -----------------------------------------------------

@dataclass(frozen=True)
class Style:
    """How one configuration (or one series) is drawn: its defense's colour family and its own marker."""
    colour: tuple
    marker: str


def _capped_size(width: float, height: float) -> tuple[float, float]:
    """A figure size in inches whose long side is at most MAX_SIDE_PX at DPI: past it, the panels get smaller."""
    return min(width, MAX_SIDE_IN), min(height, MAX_SIDE_IN)


def _panels(n: int, columns: int, panel_size: tuple[float, float], extra: tuple[float, float] = (0, 0),
            **subplot_kw):
    """A figure of `n` panels wrapped into rows of `columns`, and its `n` axes; `extra` inches for what is
    not a panel (tick labels, legends, title). Constrained layout makes room for legends beside the axes."""
    rows = math.ceil(n / columns)
    width, height = panel_size
    fig, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                             figsize=_capped_size(columns * width + extra[0], rows * height + extra[1]), **subplot_kw)
    axes = list(axes.flat)
    for spare in axes[n:]:
        spare.set_visible(False)
    return fig, axes[:n]


def _pages(items: list, per_page: int) -> list[list]:
    return [items[i:i + per_page] for i in range(0, len(items), per_page)]


def _legend_columns(n_entries: int) -> int:
    return max(1, math.ceil(n_entries / LEGEND_ROWS))


def _legend_beside(ax) -> None:
    """The axes' legend to their right, outside the data."""
    n = len(ax.get_legend_handles_labels()[0])
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=LEGEND_FONT,
              ncol=_legend_columns(n))


def _text_width(chars: int, fontsize: float = LEGEND_FONT) -> float:
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


def _family(colour: tuple, n: int) -> list[Style]:
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


def _config_name(defense: str, params: str, eval_split: str, max_release) -> str:
    """`fmd(eps=8/255) [500 released]`: how a configuration is named in every figure."""
    return config_label(defense, params) + setting_label(eval_split, max_release)


def _config_names(rows) -> list[str]:
    """`_config_name` of each row; computed once per configuration, as naming one reads its plugin's defaults."""
    keys = list(zip(rows.defense, rows.defense_params, rows.eval_split, rows.max_release))
    names = {key: _config_name(*key) for key in set(keys)}
    return [names[key] for key in keys]


def _config_styles(rows) -> dict[str, Style]:
    """Configuration name -> style, for the configurations in `rows` (one dataset's), in the order
    figures list them: identity first, then by defense, each in numeric order of its hyperparameters."""
    order: dict[str, dict[str, tuple]] = {}
    for r in rows[["defense", "defense_params", "eval_split", "max_release"]].drop_duplicates().itertuples():
        key = (_config_order(r.defense, json.loads(r.defense_params)), r.eval_split, int(r.max_release or 0))
        order.setdefault(r.defense, {}).setdefault(_config_name(r.defense, r.defense_params, r.eval_split,
                                                                r.max_release), key)
    styles = {}
    for defense in sorted(order, key=lambda d: (d != "identity", d)):
        names = sorted(order[defense], key=lambda name: (order[defense][name], name))
        styles.update(zip(names, _family(defense_colour(defense), len(names))))
    return styles


def _draw_point(ax, x, y, style: Style, label: str | None = None, **errors) -> None:
    """One configuration's mean with its 95 % CI (`xerr` or `yerr`), in its style."""
    ax.errorbar(x, y, fmt=style.marker, color=style.colour, ms=7, mec="black", mew=0.5, capsize=3, label=label,
                **errors)


def _ci(rows, mean: str = "mean", low: str = "ci95_low", high: str = "ci95_high") -> np.ndarray:
    """Error-bar lengths below and above the mean; never negative (a CI may sit on one side of a clipped mean)."""
    m = rows[mean].to_numpy(dtype=float)
    return np.vstack([np.maximum(m - rows[low].to_numpy(dtype=float), 0),
                      np.maximum(rows[high].to_numpy(dtype=float) - m, 0)])


# --- the figures ----------------------------------------------------------------------------------

TRADEOFF_COLUMNS = 2
TRADEOFF_PANEL_WIDTH, TRADEOFF_PANEL_HEIGHT = 5.0, 4.2


def _tradeoff(worst, agg, path: Path) -> Path | None:
    """Utility against worst-case leakage: one panel per dataset, one point per configuration."""
    worst = worst.dropna(subset=["utility_acc"])
    if worst.empty:
        return None
    datasets = sorted(worst.dataset.unique())
    columns = min(TRADEOFF_COLUMNS, len(datasets))
    names = _config_names(worst)
    legend_width = _text_width(max(map(len, names))) * _legend_columns(worst.dataset.value_counts().max())
    sns.set_theme(style="whitegrid")
    fig, axes = _panels(len(datasets), columns, (TRADEOFF_PANEL_WIDTH + legend_width, TRADEOFF_PANEL_HEIGHT),
                        extra=(0, 0.5))
    for ax, ds in zip(axes, datasets):
        styles = _config_styles(agg[agg.dataset == ds])
        d = worst.assign(name=names)[worst.dataset == ds]
        labelled = set()
        for name in [n for n in styles if n in set(d.name)]:
            points = d[d.name == name]
            # No calibrated attacker: no worst case, so no point (the CI is nan too).
            cis = _ci(points, "worst_leakage", "worst_ci95_low", "worst_ci95_high")
            for row, ci in zip(points.itertuples(), cis.T):
                _draw_point(ax, row.utility_acc, row.worst_leakage, styles[name],
                            None if name in labelled else name, yerr=ci.reshape(2, 1))
                labelled.add(name)
        ax.set_xlabel("utility (designated-model accuracy on released test data)", fontsize=9)
        ax.set_ylabel("worst-case leakage over calibrated attackers\n(0 = nothing, 1 = as with no defense)", fontsize=9)
        ax.set_title(ds)
        ax.axhline(0, color="grey", lw=0.8)
        _legend_beside(ax)
    fig.suptitle("Utility vs leakage (better: right and low)")
    return _save(fig, path)


ATTACKER_COLUMNS = 3
ATTACKER_PANEL_WIDTH = 3.2
# Inches a panel needs besides its rows of configurations (title, x ticks and label), and each row.
ATTACKER_PANEL_FRAME, ATTACKER_ROW = 0.9, 0.24
ATTACKER_MIN_WIDTH = 7.0


def _attacker_figures(agg, out_dir: Path) -> list[Path]:
    """attackers-<dataset>.png: one panel per attacker, one row per defense configuration; as many
    pages as it takes to keep each within MAX_SIDE_PX."""
    paths = []
    sns.set_theme(style="whitegrid")
    for ds, rows in agg.groupby("dataset", sort=True):
        measured = _attacker_measures(rows)
        if measured.empty:
            continue
        styles = _config_styles(rows)
        names = [n for n in styles if n in set(measured.config)]
        whos = _attacker_order(measured)
        panel_height = ATTACKER_PANEL_FRAME + ATTACKER_ROW * len(names)
        rows_per_page = max(1, int((MAX_SIDE_IN - 0.5) // panel_height))
        for page, page_whos in enumerate(_pages(whos, rows_per_page * ATTACKER_COLUMNS), 1):
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
    else:
        d = rows[(rows.metric == "attack_acc") | ((rows.metric == "ssim") & (rows.attacker == "inversion"))]
    return d.assign(config=_config_names(d), who=_attacker_labels(d))


def _attacker_page(measured, rows, ds: str, whos: list[str], names: list[str], styles: dict[str, Style],
                   path: Path) -> Path:
    has_defended = _has_defended(rows)
    columns = min(ATTACKER_COLUMNS, len(whos))
    labels_width = _text_width(max(map(len, names)))
    # At least as wide as the title, with one panel.
    extra_width = max(labels_width, ATTACKER_MIN_WIDTH - columns * ATTACKER_PANEL_WIDTH)
    fig, axes = _panels(len(whos), columns, (ATTACKER_PANEL_WIDTH, ATTACKER_PANEL_FRAME + ATTACKER_ROW * len(names)),
                        extra=(extra_width, 0.5), sharey=True)
    levels = {} if has_defended else _chance_levels(rows)
    position = {name: i for i, name in enumerate(names)}
    for ax, who in zip(axes, whos):
        attacks = measured[measured.who == who]
        for r, ci in zip(attacks.itertuples(), _ci(attacks).T):
            _draw_point(ax, r.mean, position[r.config], styles[r.config], xerr=ci.reshape(2, 1))
        if has_defended:
            ax.axvline(0, color="grey", lw=0.8)
            references, xlabel = [0.0, 1.0], "leakage (dashed: no defense)"
        else:
            reached = "SSIM" if (attacks.metric == "ssim").all() else "accuracy"
            references = [levels[who]] if who in levels else []
            xlabel = f"{reached} (dashed: {'mean image' if reached == 'SSIM' else 'chance'})"
        if references:
            ax.axvline(references[-1], color="black", ls="--", lw=1)
        _focus(ax, [*attacks["mean"], *references], [*attacks.ci95_low, *attacks.ci95_high])
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_title(who, fontsize=10)
    axes[0].set_yticks(range(len(names)), names)
    for ax in axes:  # the shared ticks are labelled on the first panel of each row
        ax.tick_params(axis="y", labelsize=LEGEND_FONT)
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # the first configuration on top
    what = "leakage per attacker" if has_defended else "what each attacker reaches with no defense"
    fig.suptitle(f"{ds}: {what} (mean over seeds, 95 % CI)", fontsize=12)
    return _save(fig, path)


def _focus(ax, core: list[float], ci_ends: list[float]) -> None:
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


def _chance_levels(rows) -> dict[str, float]:
    """Attacker label -> what its accuracy means nothing above (the majority class of its task), or
    for inversion the SSIM of the mean image. Several identity configurations (e.g. capped and
    uncapped) share one attacker label: one level each."""
    chance = rows[rows.metric.isin(["chance", "ssim_chance"]) & (rows.defense == "identity")]
    # Inversion reports no `chance`; a classifier no `ssim_chance`: one level per attacker either way.
    return chance.assign(who=_attacker_labels(chance)).groupby("who")["mean"].mean().to_dict()


def _attacker_labels(rows, params: str = "attacker_params") -> list[str]:
    """`transfer(archs=cnn)[class]`: attacker, its non-default settings (column `params`) and its task,
    one per row; computed once per attacker configuration, as naming one reads its plugin's defaults."""
    keys = list(zip(rows.attacker, rows[params], rows.attack_task))
    labels = {(a, p, t): f"{config_label(a, p, ATTACKERS)}[{t}]" for a, p, t in set(keys)}
    return [labels[key] for key in keys]


def _attacker_order(rows, params: str = "attacker_params") -> list[str]:
    """The distinct `who` labels of `rows`, by attacker, then in numeric order of its settings
    (budget=20 before budget=100), then by task."""
    keys = {}
    for who, attacker, p, task in zip(rows.who, rows.attacker, rows[params], rows.attack_task):
        keys.setdefault(who, (attacker, _config_order(attacker, json.loads(p)), task))
    return sorted(keys, key=keys.get)


SAMPLE_KINDS = ("original", "released", "inverted")


def _grid_inputs(results_dir: Path, runs: list[dict]) -> dict[str, dict[tuple, dict]]:
    """dataset -> (setting, order, label) -> arrays, from the inversion runs' saved samples
    (lowest seed per configuration). A sample that cannot be read is refused, naming it."""
    chosen: dict[str, dict[tuple, Path]] = {}
    samples_dir = results_dir / "samples"
    for r in sorted(runs, key=lambda r: r["spec"]["seed"]):
        s = r["spec"]
        # The run_id is a validated hash (`validate_record`): the name cannot lead out of samples/.
        sample = samples_dir / f"{r['run_id']}.npz"
        if r["status"] != "ok" or s["attacker"] != "inversion" or not (sample.exists() or sample.is_symlink()):
            continue
        setting = setting_label(s.get("eval_split", "test"), s.get("max_release"))
        params = recorded_params(s["defense"], s["defense_params"])
        label = _config_name(s["defense"], json.dumps(params, sort_keys=True), s.get("eval_split", "test"),
                             s.get("max_release"))
        # Grouped by setting first: configurations scored on the same test images share one originals row.
        key = (setting, _config_order(s["defense"], params), label)
        chosen.setdefault(s["dataset"], {}).setdefault(key, sample)
    return {ds: {key: _read_sample(sample) for key, sample in configs.items()} for ds, configs in chosen.items()}


def _read_sample(path: Path) -> dict:
    """The image arrays of one saved sample (`pipeline.save_samples`), or a BenchError naming the file."""
    fix = "delete it (the run's numbers stay; its grid row goes)"
    try:
        if path.is_symlink() and path.parent.resolve() not in path.resolve().parents:
            raise BenchError(f"sample file {path} is a symlink to {path.resolve()}, outside {path.parent}; {fix}")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in SAMPLE_KINDS if k in z.files}
    except BenchError:
        raise
    except (OSError, ValueError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BenchError(f"corrupt sample file {path}: {reason}; {fix}") from None
    if "original" not in arrays:
        raise BenchError(f"corrupt sample file {path}: no `original` images; {fix}")
    for k, a in arrays.items():
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1] not in (1, 3) or not len(a):
            raise BenchError(f"corrupt sample file {path}: `{k}` is {a.dtype} of shape {a.shape}, not uint8 "
                             f"images (n, 1 or 3, h, w); {fix}")
    return arrays


GRID_CELL = 0.8  # inches an image takes in a grid
GRID_TITLE = 0.5
# Image rows a grid page holds at most (within MAX_SIDE_PX); more go on the next page.
GRID_ROWS_PER_PAGE = int((MAX_SIDE_IN - GRID_TITLE) // GRID_CELL) - 2


def _grids(chosen: dict[str, dict[tuple, dict]], out_dir: Path) -> list[Path]:
    """grid-<dataset>.png (and -p2, ... when the rows do not fit one page): originals, then what each
    configuration releases and the inversion recovers."""
    paths = []
    for ds, configs in sorted(chosen.items()):
        for page, rows in enumerate(_grid_pages(configs), 1):
            paths.append(_grid_figure(ds, rows, page_path(out_dir, "grid", ds, page)))
    return paths


def _grid_pages(configs: dict[tuple, dict]) -> list[list[tuple[str, np.ndarray]]]:
    """The (title, images) rows of each page. A configuration's rows stay on one page, under the
    originals it was scored on: a capped release scores another subset of test, so its originals get
    their own row, and a page that starts mid-way repeats them."""
    pages: list[list] = [[]]
    originals = None
    for (setting, _, label), z in sorted(configs.items(), key=lambda kv: kv[0]):
        block = [(f"{kind}\n{label}", z[kind]) for kind in ("released", "inverted") if kind in z]
        new_originals = originals is None or not np.array_equal(z["original"], originals[1])
        originals = (f"original{setting}", z["original"]) if new_originals else originals
        if pages[-1] and len(pages[-1]) + len(block) + new_originals > GRID_ROWS_PER_PAGE:
            pages.append([])
            new_originals = True
        pages[-1] += ([originals] if new_originals else []) + block
    return pages


def _grid_figure(ds: str, rows: list[tuple[str, np.ndarray]], path: Path) -> Path:
    n = max(len(a) for _, a in rows)
    height = GRID_CELL * len(rows) + GRID_TITLE
    # One axes per row, its images side by side in one picture: hundreds of axes would take most of the time.
    fig, axes = plt.subplots(len(rows), 1, figsize=(GRID_CELL * n, height), squeeze=False)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - GRID_TITLE / height, hspace=0.06)
    for ax, (title, images) in zip(axes[:, 0], rows):
        ax.axis("off")
        ax.imshow(_image_strip(images, n))
        ax.text(-0.01, 0.5, title, transform=ax.transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{ds}: test images, what each defense releases,\nand the inversion attacker's reconstruction",
                 fontsize=9, y=1 - 0.05 / height)
    # The row titles stand left of the images: the saved area grows to hold them.
    return _save(fig, path, bbox_inches="tight")


def _image_strip(images: np.ndarray, places: int) -> np.ndarray:
    """uint8 images (k, 1 or 3, h, w) side by side as one RGB picture, a white gap between them,
    white where a row has fewer than `places` images."""
    _, _, h, w = images.shape
    gap = max(1, w // 16)
    strip = np.full((h, places * (w + gap) - gap, 3), 255, np.uint8)
    for j, image in enumerate(images[:places]):
        strip[:, j * (w + gap):j * (w + gap) + w] = image.transpose(1, 2, 0)  # a grey channel fills all three
    return strip


def _config_order(defense: str, params: dict) -> tuple:
    """Configurations of one defense in numeric order of their hyperparameters (lam=2 before lam=10)."""
    return defense, tuple((k, (0, v, "") if _is_number(v) else (1, 0, json.dumps(v)))
                          for k, v in sorted(params.items()))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sweep_lines(configs) -> dict[str, list[dict]]:
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
        if not all(param in p and _is_number(p[param]) for p, _, _ in parsed):
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


BUDGET_CURVE = ["defense", "defense_params", "max_release", "attacker", "curve_params", "attack_task"]
BUDGET_COLUMNS = 3
BUDGET_PANEL = (4.2, 3.4)
BUDGET_MIN_WIDTH = 8.0  # the title's width


def _budgets(agg, out_dir: Path) -> list[Path]:
    """budget-<dataset>.png: leakage against the number of labelled released images the attacker
    learnt from (its budget; log scale), one panel per attacker and one curve per defense configuration
    run at two or more budgets, with 95 % CIs: how fast a defense falls as the attacker gets more data."""
    curves = _budget_curves(agg)
    if curves.empty:
        return []
    sns.set_theme(style="whitegrid")
    paths = []
    for ds, g in curves.groupby("dataset", sort=True):
        styles = _config_styles(agg[agg.dataset == ds])
        whos = _attacker_order(g, "curve_params")
        rows_per_page = max(1, int((MAX_SIDE_IN - 0.5) // BUDGET_PANEL[1]))
        for page, page_whos in enumerate(_pages(whos, rows_per_page * BUDGET_COLUMNS), 1):
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
    return leak.assign(config=_config_names(leak), who=_attacker_labels(leak, "curve_params"))


def _budget_page(curves, ds: str, whos: list[str], styles: dict[str, Style], path: Path) -> Path:
    names = [n for n in styles if n in set(curves.config)]
    columns = min(BUDGET_COLUMNS, len(whos))
    width = max(BUDGET_MIN_WIDTH, columns * BUDGET_PANEL[0])
    # The legend goes below the panels, in as many columns as the figure's width holds.
    legend_columns = max(1, int(width // _text_width(max(map(len, names)))))
    legend_height = LEGEND_ROW * math.ceil(len(names) / legend_columns)
    fig, axes = _panels(len(whos), columns, BUDGET_PANEL,
                        extra=(width - columns * BUDGET_PANEL[0], 0.6 + legend_height))
    for ax, who in zip(axes, whos):
        for name, c in curves[curves.who == who].groupby("config", sort=False):
            c = c.sort_values("images")
            ax.errorbar(c.images, c["mean"], yerr=_ci(c), marker=styles[name].marker, color=styles[name].colour,
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
    return _save(fig, path)


def _sweeps(long, agg, out_dir: Path) -> list[Path]:
    cols = ["dataset", "defense", "defense_params", *SWEEP_CONTEXT]
    configs = agg[agg.defense != "identity"][cols].drop_duplicates()
    paths = []
    for (ds, defense), group in configs.groupby(["dataset", "defense"], sort=True):
        for param, lines in _sweep_lines(group).items():
            seeds, line_agg = _on_common_seeds(long[long.dataset == ds], defense, lines)
            paths.append(_sweep_figure(line_agg, ds, defense, param, lines, seeds,
                                       plot_path(out_dir, "sweep", ds, defense, param)))
    return [p for p in paths if p is not None]


def _on_common_seeds(long, defense: str, lines: list[dict]) -> tuple[list[int], "object"]:
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
        groups.sort(key=lambda group: (_config_order(attacker, json.loads(group[0]["attacker_params"])),
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
    fig, axes = _panels(len(panels), min(SWEEP_COLUMNS, len(panels)), SWEEP_PANEL, extra=(0, 0.9))
    for ax, (metric, attacker, title, series) in zip(axes, panels):
        attacker_varying = _varying([key for _, key, _ in series])
        styles = _family(defense_colour(defense), len(series))
        for style, (line, key, rows) in zip(styles, series):
            described = {**line["others"], **line["context"], **key}
            label = _series_label(defense, attacker, described, line_varying + attacker_varying)
            ax.errorbar(rows["x"], rows["mean"], yerr=_ci(rows), fmt="-" + style.marker, ms=5, mec="black", mew=0.5,
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
            _legend_beside(ax)
    on = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}, 95 % CI"
    fig.legend(*_sweep_line_kinds(on), loc="outside lower center", ncol=3, fontsize=LEGEND_FONT)
    fig.suptitle(f"{ds}: {defense} over {param} ({on}: the seeds every point has)", fontsize=11)
    return _save(fig, path)


def _sweep_line_kinds(measured: str) -> tuple[list, list[str]]:
    """Legend handles and labels for what the kinds of line in a sweep mean, once for all panels."""
    return ([Line2D([], [], color="black", marker="o", ms=5), Line2D([], [], color="black", ls="--", lw=1),
             Line2D([], [], color="black", ls=":", lw=1)],
            [f"measured ({measured})", "no defense (identity)", "chance (attacks) / mean image (inversion)"])
