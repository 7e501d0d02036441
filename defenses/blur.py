"""Baseline: Gaussian blur of standard deviation `sigma` pixels (a trivial transform, one strength)."""
from __future__ import annotations

import math

from bench.protocol import Defense


class GaussianBlur(Defense):
    name = "blur"
    description = "baseline: Gaussian blur (sigma in pixels)"
    releases = "image"
    baseline = True

    def __init__(self, sigma: float = 1.0):
        self.sigma = sigma

    def check_params(self):
        if not 0 < self.sigma <= 32:
            raise self.param_error("sigma", "must be a number of pixels above 0 and at most 32")

    def _release(self, xb):
        # Imported here: torchvision costs ~1.5 s, paid by every process that lists the defenses otherwise.
        from torchvision.transforms.functional import gaussian_blur

        # The kernel spans +-3 sigma; reflect padding keeps the borders' brightness.
        size = 2 * math.ceil(3 * self.sigma) + 1
        return gaussian_blur(xb, [size, size], [self.sigma, self.sigma]).clamp(0, 1)
