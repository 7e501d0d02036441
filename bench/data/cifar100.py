"""CIFAR-100 in torchvision's python format (`cifar-100-python/train`, `test`, `meta`);
tasks `fine` (100 classes) and `coarse` (20 superclasses). Downloaded by torchvision when online."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from bench.data.base import DatasetLoader, ImageDataset, cached, torchvision_download
from bench.data.cifar10 import read_pickle_batches
from bench.errors import BenchError
from bench.storage import cache_root, file_digest

PICKLE_DIR = "cifar-100-python"


class CIFAR100(DatasetLoader):
    name = "cifar100"
    description = "CIFAR-100, 32x32 colour objects in 100 classes / 20 superclasses (torchvision format)"
    tasks = "fine (100), coarse (20)"
    train_overrides = {"default": {"epochs": 15, "augment": True, "lr": 4e-3, "patience": 3},
                       "full": {"epochs": 80, "augment": True, "patience": 10}}

    def __init__(self, download: bool = True):
        self.download = download

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
        x_tr, fine_tr = read_pickle_batches(paths[:1], b"fine_labels")
        x_te, fine_te = read_pickle_batches(paths[1:2], b"fine_labels")
        _, coarse_tr = read_pickle_batches(paths[:1], b"coarse_labels")
        _, coarse_te = read_pickle_batches(paths[1:2], b"coarse_labels")
        try:
            with open(paths[2], "rb") as f:
                meta = pickle.load(f, encoding="bytes")  # the distribution's own format, as torchvision reads it
            fine_names = [n.decode() for n in meta[b"fine_label_names"]]
            coarse_names = [n.decode() for n in meta[b"coarse_label_names"]]
        except (OSError, EOFError, pickle.UnpicklingError, KeyError) as e:
            raise BenchError(f"cannot read CIFAR-100 meta {paths[2]}: {type(e).__name__}: {e}") from None
        return {"images": torch.from_numpy(np.concatenate([x_tr, x_te])),
                "fine": torch.from_numpy(np.concatenate([fine_tr, fine_te])),
                "coarse": torch.from_numpy(np.concatenate([coarse_tr, coarse_te])),
                "fine_names": fine_names, "coarse_names": coarse_names, "n_train": len(x_tr)}
