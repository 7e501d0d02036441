"""Figures written after every run and by `python -m bench plot`.

- tradeoff.png: utility vs worst-case leakage, one point per defense configuration
  (error bars: 95 % CI of the worst attacker), one panel per dataset;
- attackers.png: leakage (or accuracy on identity) per attacker and defense, with CIs;
- grid-<dataset>.png: original / released / inverted test images per defense configuration;
- sweep-<dataset>-<defense>-<param>.png: for a defense run at several values of one numeric
  hyperparameter (all else equal, e.g. `--set arl.lam=0,0.1,1`), utility and each attack
  against that value, with the no-defense and chance levels for reference.

Every file name is made in `plot_path`: names taken from run records (datasets, defenses,
hyperparameters) become file-name slugs, so whatever a record says, a figure is written
inside `plots/` and nowhere else; figures are written atomically (a symlink already at a
figure's name is replaced, never written through).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.registry import ATTACKERS  # noqa: E402
from bench.storage import atomic_write_bytes  # noqa: E402
from bench.results import CONFIG, aggregate, config_label, load_runs, recorded_params, setting_label, write_leaderboards  # noqa: E402

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
            written += [_tradeoff(tables["worst"], plot_path(out_dir, "tradeoff")),
                        _attackers(tables["agg"], plot_path(out_dir, "attackers"))]
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


def _save(fig, path: Path, **kwargs) -> Path:
    """The figure as PNG at `path`, atomically; a symlink there is replaced, not followed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, **kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _tradeoff(worst, path: Path) -> Path | None:
    worst = worst.dropna(subset=["utility_acc"])
    if worst.empty:
        return None
    datasets = sorted(worst.dataset.unique())
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        d = worst[worst.dataset == ds]
        for i, row in enumerate(d.itertuples()):
            label = config_label(row.defense, row.defense_params) + setting_label(row.eval_split, row.max_release)
            leak = row.worst_leakage if np.isfinite(row.worst_leakage) else np.nan
            yerr = None
            if np.isfinite(leak):
                yerr = [[leak - row.worst_ci95_low], [row.worst_ci95_high - leak]]
            ax.errorbar(row.utility_acc, leak, yerr=yerr, fmt="o", ms=8, capsize=4, label=label,
                        color=sns.color_palette("tab10")[i % 10])
        ax.set_xlabel("utility (designated-model accuracy on released test data)", fontsize=9)
        ax.set_ylabel("worst-case leakage over calibrated attackers\n(0 = nothing, 1 = as with no defense)")
        ax.set_title(ds)
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Utility vs leakage (better: right and low)")
    fig.tight_layout()
    return _save(fig, path)


def _attackers(agg, path: Path) -> Path | None:
    has_defended = (agg.defense != "identity").any()
    metric = "leakage" if has_defended else "attack_acc"
    d = agg[agg.metric.isin([metric, "ssim"] if not has_defended else [metric])].copy()
    if not has_defended:
        # On identity alone, show what each attacker reaches: accuracy (classifiers) or SSIM (inversion).
        d = d[~((d.metric == "ssim") & (d.attacker != "inversion"))]
    if d.empty:
        return None
    d["config"] = [config_label(a, b) + setting_label(e, m)
                   for a, b, e, m in zip(d.defense, d.defense_params, d.eval_split, d.max_release)]
    d["who"] = _attacker_labels(d)
    datasets = sorted(d.dataset.unique())
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(len(datasets), 1, figsize=(max(7, 1.3 * d.who.nunique() * d.config.nunique()), 4 * len(datasets)),
                             squeeze=False)
    for ax, ds in zip(axes[:, 0], datasets):
        sub = d[d.dataset == ds]
        whos, configs = sorted(sub.who.unique()), sorted(sub.config.unique())
        width = 0.8 / len(configs)
        for j, cfg in enumerate(configs):
            rows = sub[sub.config == cfg].set_index("who").reindex(whos)
            x = np.arange(len(whos)) + (j - (len(configs) - 1) / 2) * width
            err = np.vstack([rows["mean"] - rows["ci95_low"], rows["ci95_high"] - rows["mean"]])
            ax.bar(x, rows["mean"], width, yerr=err, capsize=3, label=cfg)
        if not has_defended:
            # Chance (majority class) of each attacker's task: what accuracy means nothing above.
            chance = agg[(agg.dataset == ds) & (agg.metric == "chance") & (agg.defense == "identity")]
            chance = chance.assign(who=_attacker_labels(chance))
            # Several identity configurations (e.g. capped and uncapped) share one attacker label: one level each.
            level = chance.groupby("who")["mean"].mean().reindex(whos)
            ax.hlines(level, np.arange(len(whos)) - 0.4, np.arange(len(whos)) + 0.4, colors="black",
                      linestyles="dashed", label="chance")
        ax.set_xticks(np.arange(len(whos)), whos, rotation=15)
        ax.set_ylabel(metric if has_defended else "attack accuracy (SSIM for inversion)")
        ax.set_title(f"{ds}: per attacker, mean over seeds with 95 % CI")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _attacker_labels(rows) -> list[str]:
    """`transfer(archs=cnn)[class]`: attacker, its non-default settings and its task, one per row."""
    return [f"{config_label(a, p, ATTACKERS)}[{t}]" for a, p, t in zip(rows.attacker, rows.attacker_params,
                                                                        rows.attack_task)]


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
        label = config_label(s["defense"], json.dumps(params, sort_keys=True)) + setting
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


def _grids(chosen: dict[str, dict[tuple, dict]], out_dir: Path) -> list[Path]:
    """One grid per dataset: originals, then what each configuration releases and the inversion recovers."""
    paths = []
    for ds, configs in sorted(chosen.items()):
        rows, shown = [], None
        for (setting, _, label), z in sorted(configs.items(), key=lambda kv: kv[0]):
            # A capped release scores another subset of test: its originals get their own row.
            if shown is None or not np.array_equal(z["original"], shown):
                shown = z["original"]
                rows.append((f"original{setting}", shown))
            for kind in ("released", "inverted"):
                if kind in z:
                    rows.append((f"{kind}\n{label}", z[kind]))
        n = max(len(a) for _, a in rows)
        fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n + 1.5, 1.3 * len(rows)), squeeze=False)
        for i, (title, arr) in enumerate(rows):
            for j in range(n):
                ax = axes[i, j]
                ax.axis("off")
                if j < len(arr):
                    img = arr[j].transpose(1, 2, 0)
                    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            axes[i, 0].text(-0.1, 0.5, title, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7)
        fig.suptitle(f"{ds}: test images, what each defense releases, and the inversion attacker's reconstruction",
                     fontsize=9)
        fig.tight_layout()
        paths.append(_save(fig, plot_path(out_dir, "grid", ds), bbox_inches="tight"))
    return paths


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


def _budgets(agg, out_dir: Path) -> list[Path]:
    """budget-<dataset>.png: leakage against the number of labelled released images the attacker
    learnt from (its budget; log scale), one curve per defense configuration and attacker run at
    two or more budgets, with 95 % CIs: how fast a defense falls as the attacker gets more data."""
    key = ["dataset", "defense", "defense_params", "max_release", "attacker", "attacker_params", "attack_task"]
    test = agg[(agg.eval_split == "test") & (agg.defense != "identity")]
    images = test[test.metric == "attack_images"].set_index(key)["mean"].rename("images")
    leak = test[test.metric == "leakage"].join(images, on=key).dropna(subset=["images"])
    if leak.empty:
        return []
    # One curve: everything but the budget equal.
    leak = leak.assign(curve_params=[json.dumps({k: v for k, v in json.loads(p).items() if k != "budget"},
                                                sort_keys=True) for p in leak.attacker_params])
    paths = []
    for ds, g in leak.groupby("dataset", sort=True):
        curves = [(k, c.sort_values("images")) for k, c in g.groupby(BUDGET_CURVE, sort=True)
                  if c.images.nunique() >= 2]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for (defense, params, cap, attacker, _, task), c in curves:
            ax.errorbar(c.images, c["mean"], yerr=[c["mean"] - c.ci95_low, c.ci95_high - c["mean"]], marker="o",
                        capsize=3, label=f"{config_label(defense, params)}{setting_label('test', cap)} x {attacker}[{task}]")
        ax.set_xscale("log")
        ax.axhline(1, color="black", linestyle="dashed", linewidth=0.8, label="no defense")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("labelled released images the attacker learns from (budget)")
        ax.set_ylabel("leakage (1 = as with no defense)")
        ax.set_title(f"{ds}: leakage against attacker budget (mean, 95 % CI)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        paths.append(_save(fig, plot_path(out_dir, "budget", ds), bbox_inches="tight"))
    return paths


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


def _sweep_scale(ax, values: list[float]) -> None:
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
    ax.set_xticks(values, [f"{v:.3g}" for v in values], rotation=30 if len(values) > 5 else 0)
    ax.minorticks_off()


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
    palette = sns.color_palette("tab10")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (metric, attacker, title, series) in zip(axes[0], panels):
        attacker_varying = _varying([key for _, key, _ in series])
        for i, (line, key, rows) in enumerate(series):
            color = palette[i % 10]
            described = {**line["others"], **line["context"], **key}
            label = (", ".join(f"{k}={described[k]}" for k in line_varying + attacker_varying)
                     or ("mean over seeds" if len(seeds) > 1 else "measured"))
            mean = rows["mean"].to_numpy()
            yerr = np.vstack([np.maximum(mean - rows["ci95_low"].to_numpy(), 0),
                              np.maximum(rows["ci95_high"].to_numpy() - mean, 0)])
            ax.errorbar(rows["x"], mean, yerr=yerr, fmt="o-", ms=5, capsize=3, color=color, label=label)
            reference = _reference(agg, line, key, metric, attacker)
            if reference is not None:
                ax.axhline(reference, color=color, ls="--", lw=1, label="no defense (identity)" if i == 0 else None)
            if metric in CHANCE_METRIC:
                chance = _sweep_series(agg, line, CHANCE_METRIC[metric], attacker)
                level = [r["mean"].mean() for k, r in chance if k == key]
                if level:
                    ax.axhline(level[0], color=color, ls=":", lw=1,
                               label=None if i else "chance" if metric == "attack_acc" else "mean image")
        _sweep_scale(ax, values)
        ax.set_xlabel(f"{defense}.{param}")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="best")
    on = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}, 95 % CI"
    fig.suptitle(f"{ds}: {defense} over {param} ({on}: the seeds every point has)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
