"""Baseline: pixelation into `block` x `block` squares of their mean (a trivial transform, one strength)."""
from __future__ import annotations

import torch.nn.functional as F

from bench.protocol import Defense


class Pixelate(Defense):
    name = "pixelate"
    description = "baseline: pixelation (each block x block square replaced by its mean)"
    releases = "image"
    baseline = True

    def __init__(self, block: int = 2):
        self.block = block

    def check_params(self):
        if not 1 <= self.block <= 64:
            raise self.param_error("block", "must be a number of pixels between 1 and 64")

    def _release(self, xb):
        h, w = xb.shape[-2:]
        # ceil_mode keeps a partial last block (28 px in blocks of 3) instead of dropping it.
        means = F.avg_pool2d(xb, self.block, ceil_mode=True)
        return F.interpolate(means, scale_factor=self.block, mode="nearest")[..., :h, :w]
