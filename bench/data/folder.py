"""Bring your own data: a directory of images plus `labels.csv` (column `file`, one column per task).

String labels map to their sorted class names; integer labels to their sorted distinct
values. An optional `split` column (train/val/test) fixes the partition; otherwise a
seeded `test_fraction` of the rows is test. Images of mixed sizes are resized.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.data.base import DatasetLoader, ImageDataset, cached
from bench.data.images import decode_image, tree_digest
from bench.errors import BenchError

SPLITS = ("train", "val", "test")


def read_labels(path: Path) -> tuple[list[str], dict[str, list[str]], list[str] | None]:
    """(files, {task: raw labels}, split column or None), with errors that name the row."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BenchError(f"cannot read {path}: {e}") from None
    if not rows:
        raise BenchError(f"{path} has no rows (expected a header with `file` and at least one task column)")
    columns = list(rows[0])
    if "file" not in columns:
        raise BenchError(f"{path} has no `file` column; its columns are: {', '.join(columns)}")
    tasks = [c for c in columns if c not in ("file", "split")]
    if not tasks:
        raise BenchError(f"{path} has no task column besides `file`")
    for i, row in enumerate(rows, start=2):
        for c in ["file"] + tasks:
            if row.get(c) in (None, ""):
                raise BenchError(f"{path} row {i}: empty `{c}`")
        if "split" in columns and row["split"] not in SPLITS:
            raise BenchError(f"{path} row {i}: split {row['split']!r}; valid choices: {', '.join(SPLITS)}")
    return ([r["file"] for r in rows], {t: [r[t] for r in rows] for t in tasks},
            [r["split"] for r in rows] if "split" in columns else None)


def encode(values: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Class indices and names: integers by value, strings alphabetically."""
    try:
        keys = sorted(set(values), key=int)
    except ValueError:
        keys = sorted(set(values))
    index = {k: i for i, k in enumerate(keys)}
    return torch.tensor([index[v] for v in values]), keys


class Folder(DatasetLoader):
    name = "folder"
    description = "your own images: a directory with labels.csv (column `file`, one column per task)"
    tasks = "the CSV's columns (first = designated, second = private)"

    def __init__(self, image_size: int = 32, channels: int = 3, test_fraction: float = 0.2, split_seed: int = 0):
        self.image_size = image_size
        self.channels = channels
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def load(self, data_dir: Path | None) -> ImageDataset:
        dirs = self.search_dirs(data_dir)
        if not dirs:
            raise BenchError("dataset folder needs --data-dir (or $BENCH_DATA_DIR): a directory holding labels.csv")
        root = dirs[0]
        if not root.is_dir():
            raise BenchError(f"--data-dir {str(root)!r} is not a directory")
        csv_path = root / "labels.csv"
        if not csv_path.exists():
            raise BenchError(f"{csv_path} not found: the folder dataset needs labels.csv with a `file` column")
        files, raw, split = read_labels(csv_path)
        for i, f in enumerate(files, start=2):
            if not (root / f).is_file():
                raise BenchError(f"{csv_path} row {i} names {f}, which does not exist in {root}")
        key = f"{tree_digest(root)}-{self.image_size}-{self.channels}"

        def build():
            images = [decode_image((root / f).read_bytes(), str(root / f), size=self.image_size,
                                   channels=self.channels, crop_square=True)
                      for f in tqdm(files, desc="decode folder", leave=False, disable=None)]
            out = {"images": torch.from_numpy(np.stack(images))}
            for task, values in raw.items():
                out[f"labels/{task}"], out[f"classes/{task}"] = encode(values)
            return out

        obj = cached("folder", key, build)
        tasks = list(raw)
        n = len(files)
        if split is not None:
            where = {s: torch.tensor([i for i, v in enumerate(split) if v == s], dtype=torch.long) for s in SPLITS}
        else:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
            n_test = max(1, int(round(self.test_fraction * n)))
            where = {"test": perm[:n_test].sort().values, "train": perm[n_test:].sort().values, "val": None}
        if len(where["train"]) == 0 or len(where["test"]) == 0:
            raise BenchError(f"{csv_path}: need at least one train and one test image")
        return ImageDataset(
            name=self.name, images=obj["images"],
            labels={t: obj[f"labels/{t}"] for t in tasks}, classes={t: obj[f"classes/{t}"] for t in tasks},
            train_idx=where["train"], test_idx=where["test"],
            val_idx=where["val"] if where["val"] is not None and len(where["val"]) else None,
            default_task=tasks[0], private_task=tasks[1] if len(tasks) > 1 else None, meta={"source": str(root)},
        )
