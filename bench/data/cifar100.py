"""CIFAR-100 in torchvision's python format (`cifar-100-python/train`, `test`, `meta`);
tasks `fine` (100 classes) and `coarse` (20 superclasses). Downloaded by torchvision when online."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.base import DatasetLoader, ImageDataset, cached, torchvision_download
from bench.data.cifar10 import read_batch
from bench.data.safe_pickle import load_plain
from bench.errors import BenchError
from bench.storage import cache_root, file_digest

PICKLE_DIR = "cifar-100-python"
N_FINE, N_COARSE = 100, 20
LABELS = {b"fine_labels": N_FINE, b"coarse_labels": N_COARSE}


class CIFAR100(DatasetLoader):
    name = "cifar100"
    description = "CIFAR-100, 32x32 colour objects in 100 classes / 20 superclasses (torchvision format)"
    tasks = "fine (100), coarse (20)"
    train_overrides = {"default": {"epochs": 15, "augment": True, "lr": 4e-3, "patience": 3},
                       "full": {"epochs": 80, "augment": True, "patience": 10}}

    def __init__(self, download: bool = True):
        self.download = download

    def check_options(self) -> None:
        if not isinstance(self.download, bool):
            raise self.option_error("download", "must be true or false")

    def load(self, data_dir: Path | None) -> ImageDataset:
        self.require_dir(data_dir)
        root = self._locate(data_dir)
        paths = [root / PICKLE_DIR / n for n in ("train", "test", "meta")]
        obj = cached("cifar100", file_digest(*paths), lambda: self._decode(paths))
        n_train = int(obj["n_train"])
        return ImageDataset(
            name=self.name, images=obj["images"],
            labels={"fine": obj["fine"], "coarse": obj["coarse"]},
            classes={"fine": obj["fine_names"], "coarse": obj["coarse_names"]},
            train_idx=torch.arange(n_train), test_idx=torch.arange(n_train, len(obj["fine"])),
            default_task="fine", private_task="coarse",
        )

    def _locate(self, data_dir: Path | None) -> Path:
        dirs = self.search_dirs(data_dir, cache_root() / "downloads")
        for d in dirs:
            if all((d / PICKLE_DIR / n).exists() for n in ("train", "test", "meta")):
                return d
        looked = "looked for " + ", ".join(str(d / PICKLE_DIR) for d in dirs)
        if not self.download:
            raise BenchError(f"CIFAR-100 not found: {looked}")
        return torchvision_download("CIFAR100", data_dir, looked)

    @staticmethod
    def _decode(paths: list[Path]) -> dict:
        fine_names, coarse_names = read_meta(paths[2])
        x_tr, y_tr = read_batch(paths[0], LABELS)
        x_te, y_te = read_batch(paths[1], LABELS)
        return {"images": torch.from_numpy(np.concatenate([x_tr, x_te])),
                "fine": torch.from_numpy(np.concatenate([y_tr[b"fine_labels"], y_te[b"fine_labels"]])),
                "coarse": torch.from_numpy(np.concatenate([y_tr[b"coarse_labels"], y_te[b"coarse_labels"]])),
                "fine_names": fine_names, "coarse_names": coarse_names, "n_train": len(x_tr)}


def read_meta(path: Path) -> tuple[list[str], list[str]]:
    """The 100 fine and 20 coarse class names of the meta file (a Python 2 pickle, read with `load_plain`)."""
    meta = load_plain(path, str(path), what="CIFAR-100's meta file")
    out = []
    for key, n in ((b"fine_label_names", N_FINE), (b"coarse_label_names", N_COARSE)):
        if not isinstance(meta, dict) or key not in meta:
            got = f"keys {', '.join(repr(k)[:40] for k in list(meta)[:8])}" if isinstance(meta, dict) \
                else f"a {type(meta).__name__}"
            raise BenchError(f"{path}: not CIFAR-100's meta file: no {key!r} ({got})")
        names = meta[key]
        if not isinstance(names, (list, tuple)) or len(names) != n or not all(isinstance(v, (bytes, str)) for v in names):
            got = f"{len(names)} entries" if isinstance(names, (list, tuple)) else type(names).__name__
            raise BenchError(f"{path}: {key!r} must be a list of {n} names, got {got}")
        try:
            out.append([v.decode() if isinstance(v, bytes) else v for v in names])
        except UnicodeDecodeError as e:
            raise BenchError(f"{path}: {key!r} holds a name that is not UTF-8 ({e.reason})") from None
    return out[0], out[1]
