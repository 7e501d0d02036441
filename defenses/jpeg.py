"""Baseline: JPEG re-encoding at `quality` (1-95; a trivial transform, one strength)."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from bench.protocol import Defense


class JPEG(Defense):
    name = "jpeg"
    description = "baseline: JPEG re-encoding at a quality (1-95, lower is stronger)"
    releases = "image"
    baseline = True

    def __init__(self, quality: int = 25):
        self.quality = quality

    def check_params(self):
        if not 1 <= self.quality <= 95:
            raise self.param_error("quality", "must be between 1 and 95 (PIL's useful range)")

    def _release(self, xb):
        pixels = (xb * 255).round().to(torch.uint8).cpu().numpy()
        out = np.stack([_reencode(img, self.quality) for img in pixels])
        return torch.from_numpy(out).to(xb.device).float().div_(255)


def _reencode(img: np.ndarray, quality: int) -> np.ndarray:
    """One C x H x W uint8 image through a JPEG file and back."""
    grey = img.shape[0] == 1
    pil = Image.fromarray(img[0] if grey else img.transpose(1, 2, 0), "L" if grey else "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(buf).convert("L" if grey else "RGB"))
    return back[None] if grey else back.transpose(2, 0, 1)
