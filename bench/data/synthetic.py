"""A tiny generated dataset for tests: learnable, seeded, no files needed."""
from __future__ import annotations

from pathlib import Path

import torch

from bench.data.base import DatasetLoader, ImageDataset


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
