"""What every dataset loader returns, and the base class loaders derive from.

A loader decodes its source once into uint8 tensors, caches them keyed by a
checksum of the source (`cached`), and hands back an `ImageDataset`. Splitting
into owner/attacker/val/test happens later, per seed (`bench.data.splits`).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch

from bench.errors import BenchError, unknown
from bench.storage import cache_root, load_tensors, save_tensors


@dataclass(frozen=True)
class ImageDataset:
    """All images of a dataset as one uint8 N x C x H x W tensor, plus task labels.

    `train_idx` / `test_idx` are the source's official partition; `val_idx` is the
    source's own validation partition when it has one (CelebA), else None and
    the splitter carves `val` out of the training part.
    """

    name: str
    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    classes: dict[str, list[str]]
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    val_idx: torch.Tensor | None = None
    default_task: str | None = "class"   # None: no column is a sensible default (folder); --target-task picks
    private_task: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 N x C x H x W, got {self.images.dtype} {tuple(self.images.shape)}")
        for task, y in self.labels.items():
            if len(y) != len(self.images):
                raise ValueError(f"{self.name}: task {task!r} has {len(y)} labels for {len(self.images)} images")

    @property
    def tasks(self) -> list[str]:
        return list(self.labels)

    def num_classes(self, task: str) -> int:
        return len(self.classes[self.check_task(task)])

    def check_task(self, task: str) -> str:
        if task not in self.labels:
            raise unknown(f"task for dataset {self.name}", task, self.labels)
        return task

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


@dataclass(frozen=True)
class TaskChoice:
    """The tasks a command uses, from its flags or the dataset's defaults, and what to tell the user."""

    target: str
    private: str | None
    said: str | None = None            # one line on stdout naming the choices (a dataset whose defaults are guesses)
    warnings: tuple[str, ...] = ()     # one line each on stderr: an explicit choice the defaults would not make


class DatasetLoader:
    """Base of dataset plugins. `__init__` stores options only; `load` does the work.

    A loader that overrides `check_options` gets it called before its own `load` runs
    (`__init_subclass__` wraps every `load`), so an option out of range fails in one
    line before any file is read or decoded, whichever caller constructed the loader.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    tasks: ClassVar[str] = ""  # one line for `bench list`
    # Training settings this dataset needs on top of a preset, by preset name
    # (e.g. CIFAR-10 needs augmentation and more epochs than Fashion-MNIST).
    train_overrides: ClassVar[dict[str, dict]] = {}
    # Plugin hyperparameters tuned for this dataset (on its val split), by preset name, then plugin:
    # below the preset's own plugin defaults and any --set.
    plugin_overrides: ClassVar[dict[str, dict[str, dict]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "load" in cls.__dict__:
            cls.load = _checked_first(cls.__dict__["load"])

    def load(self, data_dir: Path | None) -> ImageDataset:
        raise NotImplementedError

    @classmethod
    def resolve_tasks(cls, data: ImageDataset, target_task: str | None = None,
                      private_task: str | None = None) -> TaskChoice:
        """The designated and private task of a command: the flags' (None: not given), else the defaults.

        The private task is checked where an attacker needs it; a loader whose defaults are guesses
        overrides this to say what it chose (`folder`)."""
        if target_task is None and data.default_task is None:
            raise BenchError(f"dataset {data.name} has no default designated task; pass --target-task "
                             f"(valid choices: {', '.join(data.tasks)})")
        return TaskChoice(data.check_task(target_task or data.default_task), private_task or data.private_task)

    def check_options(self) -> None:
        """Raise BenchError for an option out of range (use `option_error`); the default accepts all."""

    def option_error(self, option: str, requirement: str) -> BenchError:
        """`--set NAME.OPTION=VALUE: REQUIREMENT`, the one line a bad dataset option gets."""
        return BenchError(f"--set {self.name}.{option}={getattr(self, option)}: {requirement}")

    def check_int(self, option: str, low: int, high: int | None = None) -> int:
        """The integer option `option`, or an `option_error` if it is no integer or outside [low, high]."""
        value = getattr(self, option)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.option_error(option, f"must be an integer, got {type(value).__name__}")
        if high is None and value < low:
            raise self.option_error(option, f"must be >= {low}")
        if high is not None and not low <= value <= high:
            raise self.option_error(option, f"must be between {low} and {high}")
        return value

    def check_choice(self, option: str, choices: tuple) -> None:
        value = getattr(self, option)
        # True == 1 in Python: a bool passes for an int choice only if bools are the choices.
        if value not in choices or (isinstance(value, bool) and not all(isinstance(c, bool) for c in choices)):
            raise self.option_error(option, f"must be {' or '.join(map(str, choices))}")

    @staticmethod
    def search_dirs(data_dir: Path | None, *defaults: Path) -> list[Path]:
        """Where to look, in order: --data-dir, $BENCH_DATA_DIR, the loader's defaults."""
        dirs = []
        if data_dir is not None:
            dirs.append(Path(data_dir))
        elif os.environ.get("BENCH_DATA_DIR"):
            dirs.append(Path(os.environ["BENCH_DATA_DIR"]))
        dirs.extend(Path(d) for d in defaults)
        return dirs

    @staticmethod
    def require_dir(data_dir: Path | None) -> None:
        if data_dir is not None and not Path(data_dir).is_dir():
            raise BenchError(f"--data-dir {str(data_dir)!r} is not a directory")


def _checked_first(load: Callable) -> Callable:
    @functools.wraps(load)
    def checked_load(self, *args, **kwargs):
        self.check_options()
        return load(self, *args, **kwargs)

    return checked_load


def torchvision_download(tv_class: str, data_dir: Path | None, looked: str) -> Path:
    """Download with `torchvision.datasets.<tv_class>` into --data-dir (or the cache); the root it used.

    For machines online; offline, the error says where the loader looked first.
    """
    import torchvision.datasets

    root = Path(data_dir) if data_dir is not None else cache_root() / "downloads"
    try:
        getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
    except Exception as e:  # torchvision raises URLError / OSError / RuntimeError when offline
        raise BenchError(f"{tv_class} not found locally ({looked}) and torchvision's download into {root} failed "
                         f"({type(e).__name__}: {e}); pass --data-dir") from None
    return root


def cached(kind: str, key: str, build: Callable[[], dict]) -> dict:
    """Load the decoded tensors for (`kind`, `key`) from the cache, or build and store them.

    `build` returns a dict of tensors / lists / strings. It is written only once
    complete, atomically and with a checksum, so a failed or killed decode
    leaves nothing a later run could load.
    """
    # The whole key is hashed: loaders append their options to a source digest (`<sha256>-64`),
    # and a prefix of the key would let two image sizes share one file.
    path = cache_root() / "data" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
    obj = load_tensors(path, f"{kind}:{key}")
    if obj is None:
        obj = build()
        save_tensors(path, obj, f"{kind}:{key}")
    return obj
