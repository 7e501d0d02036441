"""Baseline: additive Gaussian noise of standard deviation `sigma`, clipped to [0, 1].

A trivial transform with one strength parameter: a floor that any learned defense should
beat at the same utility. The noise of each image is drawn from a generator seeded by the
defense's seed and the image's own pixels, so a release does not depend on batching or on
which other images are released with it.
"""
from __future__ import annotations

import torch

from bench.protocol import Defense


class GaussianNoise(Defense):
    name = "noise"
    description = "baseline: additive Gaussian noise (sigma on [0, 1] pixels), clipped to [0, 1]"
    releases = "image"
    baseline = True

    def __init__(self, sigma: float = 0.2):
        self.sigma = sigma

    def check_params(self):
        if not 0 <= self.sigma <= 10:
            raise self.param_error("sigma", "must be between 0 and 10 (pixels are in [0, 1])")

    def _fit(self, data, *, seed):
        self.seed_ = torch.tensor(seed)

    def _release(self, xb):
        # A content key per image: its quantised pixels against fixed pseudo-random weights.
        flat = (xb * 255).round().to(torch.int64).flatten(1)
        weights = torch.randint(1, 2**31 - 1, (flat.shape[1],), generator=torch.Generator().manual_seed(0))
        keys = (flat.cpu() * weights).sum(1) % (2**61 - 1)
        noise = torch.stack([torch.randn(xb.shape[1:], generator=torch.Generator().manual_seed(
            int(self.seed_) * 1_000_003 + int(k))) for k in keys]).to(xb.device)
        return (xb + self.sigma * noise).clamp(0, 1)
