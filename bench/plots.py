"""Figures written after every run and by `python -m bench plot`.

- tradeoff.png: utility vs worst-case leakage, one point per defense configuration
  (error bars: 95 % CI of the worst attacker), one panel per dataset;
- attackers.png: leakage (or accuracy on identity) per attacker and defense, with CIs;
- grid-<dataset>.png: original / released / inverted test images per defense.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.results import config_label, load_runs, write_leaderboards  # noqa: E402


def write_plots(results_dir: Path) -> list[Path]:
    results_dir = Path(results_dir)
    out_dir = results_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = write_leaderboards(results_dir)
    written = []
    if not tables["agg"].empty:
        written += [_tradeoff(tables["worst"], out_dir / "tradeoff.png"),
                    _attackers(tables["agg"], out_dir / "attackers.png")]
    written += _grids(results_dir, out_dir)
    plt.close("all")
    return [p for p in written if p is not None]


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
            label = config_label(row.defense, row.defense_params)
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
    fig.savefig(path, dpi=120)
    return path


def _attackers(agg, path: Path) -> Path | None:
    has_defended = (agg.defense != "identity").any()
    metric = "leakage" if has_defended else "attack_acc"
    d = agg[agg.metric.isin([metric, "ssim"] if not has_defended else [metric])].copy()
    if not has_defended:
        # On identity alone, show what each attacker reaches: accuracy (classifiers) or SSIM (inversion).
        d = d[~((d.metric == "ssim") & (d.attacker != "inversion"))]
    if d.empty:
        return None
    d["config"] = [config_label(a, b) for a, b in zip(d.defense, d.defense_params)]
    d["who"] = [f"{a}[{t}]" for a, t in zip(d.attacker, d.attack_task)]
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
            chance = chance.assign(who=[f"{a}[{t}]" for a, t in zip(chance.attacker, chance.attack_task)])
            level = chance.set_index("who")["mean"].reindex(whos)
            ax.hlines(level, np.arange(len(whos)) - 0.4, np.arange(len(whos)) + 0.4, colors="black",
                      linestyles="dashed", label="chance")
        ax.set_xticks(np.arange(len(whos)), whos, rotation=15)
        ax.set_ylabel(metric if has_defended else "attack accuracy (SSIM for inversion)")
        ax.set_title(f"{ds}: per attacker, mean over seeds with 95 % CI")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _grids(results_dir: Path, out_dir: Path) -> list[Path]:
    """One grid per dataset from the inversion runs' saved samples (lowest seed per configuration)."""
    chosen: dict[str, dict[str, Path]] = {}
    for r in sorted(load_runs(results_dir), key=lambda r: r["spec"]["seed"]):
        s = r["spec"]
        sample = results_dir / "samples" / f"{r['run_id']}.npz"
        if r["status"] != "ok" or s["attacker"] != "inversion" or not sample.exists():
            continue
        label = config_label(s["defense"], json.dumps(s["defense_params"], sort_keys=True))
        chosen.setdefault(s["dataset"], {}).setdefault(label, sample)
    paths = []
    for ds, configs in sorted(chosen.items()):
        rows = []
        for label, sample in sorted(configs.items()):
            with np.load(sample, allow_pickle=False) as z:
                for kind in ("original", "released", "inverted"):
                    if kind in z.files and not (kind == "original" and rows):
                        rows.append((f"{kind}" + ("" if kind == "original" else f"\n{label}"), z[kind]))
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
        path = out_dir / f"grid-{ds}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths
