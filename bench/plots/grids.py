"""grid-<dataset>.png: original, released and inverted test images per defense configuration, from
the inversion runs' saved samples (each sample checked before anything is written).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bench.errors import BenchError
from bench.params import recorded_params, setting_label
from bench.plots.files import MAX_SIDE_IN, page_path, save_png
from bench.plots.style import config_order
from bench.results.keys import dataset_label
from bench.results.tables import label_books

SAMPLE_KINDS = ("original", "released", "inverted")


def grid_inputs(results_dir: Path, runs: list[dict]) -> dict[str, dict[tuple, dict]]:
    """dataset -> (setting, order, label) -> arrays, from the inversion runs' saved samples
    (lowest seed per configuration). A sample that cannot be read is refused, naming it."""
    chosen: dict[str, dict[tuple, Path]] = {}
    samples_dir = results_dir / "samples"
    labels = label_books(runs)["defense"]
    for r in sorted(runs, key=lambda r: r["spec"]["seed"]):
        s = r["spec"]
        # The run_id is a validated hash (`validate_record`): the name cannot lead out of samples/.
        sample = samples_dir / f"{r['run_id']}.npz"
        if r["status"] != "ok" or s["attacker"] != "inversion" or not (sample.exists() or sample.is_symlink()):
            continue
        setting = setting_label(s.get("eval_split", "test"), s.get("max_release"))
        params = recorded_params(s["defense"], s["defense_params"])
        label = labels[s["defense"], json.dumps(params, sort_keys=True)] + setting
        # Grouped by setting first: configurations scored on the same test images share one originals row.
        key = (setting, config_order(s["defense"], params), label)
        chosen.setdefault(dataset_label(r), {}).setdefault(key, sample)
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


def grid_figures(chosen: dict[str, dict[tuple, dict]], out_dir: Path) -> list[Path]:
    """grid-<dataset>.png (and -p2, ... when the rows do not fit one page): originals, then what each
    configuration releases and the inversion recovers."""
    paths = []
    for ds, configs in sorted(chosen.items()):
        for page, rows in enumerate(grid_pages(configs), 1):
            paths.append(_grid_figure(ds, rows, page_path(out_dir, "grid", ds, page)))
    return paths


def grid_pages(configs: dict[tuple, dict]) -> list[list[tuple[str, np.ndarray]]]:
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
    return save_png(fig, path, bbox_inches="tight")


def _image_strip(images: np.ndarray, places: int) -> np.ndarray:
    """uint8 images (k, 1 or 3, h, w) side by side as one RGB picture, a white gap between them,
    white where a row has fewer than `places` images."""
    _, _, h, w = images.shape
    gap = max(1, w // 16)
    strip = np.full((h, places * (w + gap) - gap, 3), 255, np.uint8)
    for j, image in enumerate(images[:places]):
        strip[:, j * (w + gap):j * (w + gap) + w] = image.transpose(1, 2, 0)  # a grey channel fills all three
    return strip
