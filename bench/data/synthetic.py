"""A tiny generated dataset for tests: learnable, seeded, no files needed."""
from __future__ import annotations

from pathlib import Path

import torch

from bench.data.base import DatasetLoader, ImageDataset

MAX_VALUES = 2 ** 28  # 1 GiB of float32 while generating


class Synthetic(DatasetLoader):
    name = "synthetic"
    description = "generated class-dependent patterns with noise (tests and smoke runs)"
    tasks = "class (`classes`), parity (2: class mod 2)"

    def __init__(self, n: int = 600, size: int = 16, channels: int = 1, classes: int = 4, seed: int = 0):
        self.n = n
        self.size = size
        self.channels = channels
        self.classes = classes
        self.seed = seed

    def check_options(self) -> None:
        classes = self.check_int("classes", 2, 1000)  # `parity` and scoring need two classes at least
        self.check_int("size", 8, 256)  # the CNN pools three times: 8 px is its smallest input
        self.check_choice("channels", (1, 3))
        n = self.check_int("n", 1, 1_000_000)
        if n < 10 * classes:  # the test fifth then holds about two images of each class
            raise self.option_error("n", f"must be at least 10 x classes = {10 * classes}")
        self.check_int("seed", 0)
        if n * self.channels * self.size ** 2 > MAX_VALUES:  # generated as float32 before the uint8 cast
            raise self.option_error("n", f"n x channels x size^2 = {n * self.channels * self.size ** 2:,} values, "
                                         f"over {MAX_VALUES:,}; lower n or size")

    def load(self, data_dir: Path | None) -> ImageDataset:
        g = torch.Generator().manual_seed(self.seed)
        y = torch.arange(self.n) % self.classes
        y = y[torch.randperm(self.n, generator=g)]
        # One smooth prototype per class; each image is its prototype plus noise,
        # so a small CNN learns the task in a few steps.
        protos = torch.rand(self.classes, self.channels, 4, 4, generator=g)
        protos = torch.nn.functional.interpolate(protos, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = protos[y] + 0.15 * torch.randn(self.n, self.channels, self.size, self.size, generator=g)
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        n_test = self.n // 5
        return ImageDataset(
            name=self.name,
            images=images,
            labels={"class": y, "parity": y % 2},
            classes={"class": [f"c{i}" for i in range(self.classes)], "parity": ["even", "odd"]},
            train_idx=torch.arange(self.n - n_test),
            test_idx=torch.arange(self.n - n_test, self.n),
            default_task="class",
            private_task="parity",
        )
