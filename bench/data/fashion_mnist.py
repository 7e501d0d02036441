"""Fashion-MNIST: 70,000 28x28 grey images, tasks `class` (10) and `group` (3)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from bench.data.base import DatasetLoader, ImageDataset, cached, torchvision_download
from bench.errors import BenchError
from bench.storage import file_digest

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
GROUPS = ["tops", "footwear", "other"]
# tops = T-shirt, pullover, coat, shirt; footwear = sandal, sneaker, ankle boot;
# other = trouser, dress, bag (DESIGN section 6)
CLASS_TO_GROUP = [0, 2, 0, 2, 0, 1, 0, 1, 2, 1]

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (optionally gzipped) into a uint8 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise BenchError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise BenchError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise BenchError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _find(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in `directory` (plain or .gz), or None if any is missing."""
    found = {}
    for key, stem in FILES.items():
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.exists():
                found[key] = candidate
                break
        else:
            return None
    return found


class FashionMNIST(DatasetLoader):
    name = "fashion-mnist"
    description = "Fashion-MNIST, 28x28 grey clothing images (60k train / 10k test)"
    tasks = ("class (10), group (3: tops, footwear, other); task pairs: class -> group (group is derivable "
             "from class), group -> class (not derivable: a release for the coarse task should hide the fine one)")

    def __init__(self, download: bool = True):
        self.download = download

    def check_options(self) -> None:
        if not isinstance(self.download, bool):  # `--set` parses it; a Python caller might pass "no"
            raise self.option_error("download", "must be true or false")

    def load(self, data_dir: Path | None) -> ImageDataset:
        self.require_dir(data_dir)
        files = self._locate(data_dir)
        key = file_digest(*files.values())

        def build():
            x_tr, x_te = read_idx(files["train_images"]), read_idx(files["test_images"])
            y_tr, y_te = read_idx(files["train_labels"]), read_idx(files["test_labels"])
            if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
                raise BenchError(f"Fashion-MNIST image and label counts differ in {files['train_images'].parent}")
            images = torch.from_numpy(np.concatenate([x_tr, x_te])).unsqueeze(1).contiguous()
            labels = torch.from_numpy(np.concatenate([y_tr, y_te]).astype(np.int64))
            return {"images": images, "labels": labels, "n_train": len(x_tr)}

        obj = cached("fashion-mnist", key, build)
        labels = obj["labels"]
        n, n_train = len(labels), int(obj["n_train"])
        return ImageDataset(
            name=self.name,
            images=obj["images"],
            labels={"class": labels, "group": torch.tensor(CLASS_TO_GROUP)[labels]},
            classes={"class": CLASSES, "group": GROUPS},
            train_idx=torch.arange(n_train),
            test_idx=torch.arange(n_train, n),
            default_task="class",
            private_task="group",
            meta={"source": str(files["train_images"].parent)},
        )

    def _locate(self, data_dir: Path | None) -> dict[str, Path]:
        dirs = []
        for d in self.search_dirs(data_dir, DEBIAN_DIR):
            dirs += [d, d / "fashion-mnist", d / "FashionMNIST" / "raw"]
        for d in dirs:
            files = _find(d)
            if files:
                return files
        looked = ("looked for train-images-idx3-ubyte[.gz] and the other IDX files in " + ", ".join(map(str, dirs))
                  + "; Debian's dataset-fashion-mnist installs them")
        if not self.download:
            raise BenchError(f"Fashion-MNIST not found: {looked}")
        root = torchvision_download("FashionMNIST", data_dir, looked)
        files = _find(root / "FashionMNIST" / "raw")
        if files is None:
            raise BenchError(f"torchvision's download left no Fashion-MNIST IDX files in {root / 'FashionMNIST' / 'raw'}")
        return files
