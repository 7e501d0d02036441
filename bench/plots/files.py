"""Where a figure is written and how: names made safe in `plot_path`, PNGs written atomically, a size cap.

Names taken from run records (datasets, defenses, hyperparameters) become file-name slugs, so
whatever a record says, a figure is written inside `plots/` and nowhere else; a symlink already
at a figure's name is replaced, never written through.
"""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import matplotlib.pyplot as plt

from bench.errors import BenchError
from bench.storage import atomic_write_bytes

DPI = 120
# The long side of every figure, in pixels, at most: a figure wider or taller is not read but scrolled.
MAX_SIDE_PX = 2500
MAX_SIDE_IN = MAX_SIDE_PX / DPI
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]+")


def slug(text) -> str:
    """`text` as one safe file-name component: itself when it already is one (`fashion-mnist`,
    `lam`), else its safe characters and a short hash of the original (`../../x` -> `x-9cdf6a50`,
    `a/b` -> `a_b-c14cddc0`), so two names never share a slug and nothing like `..` or `/` survives."""
    text = str(text)
    safe = _UNSAFE.sub("_", text).strip("._-")[:60]
    if safe == text and text:
        return text
    return (safe + "-" if safe else "") + hashlib.sha256(text.encode()).hexdigest()[:8]


def plot_path(out_dir: Path, *parts) -> Path:
    """`out_dir/<part>-<part>-....png`, every part a `slug`; refused if it could lie anywhere but in `out_dir`."""
    name = "-".join(slug(p) for p in parts) + ".png"
    path = Path(out_dir) / name
    if path.parent != Path(out_dir) or path.name != name or name.startswith("."):
        raise BenchError(f"refusing to write plot {name!r}: not a plain file name in {out_dir}")
    return path


def page_path(out_dir: Path, kind: str, dataset: str, page: int) -> Path:
    """`<kind>-<dataset>.png` for the first page of a figure, `<kind>-<dataset>-p<page>.png` after it."""
    return plot_path(out_dir, kind, dataset, *([f"p{page}"] if page > 1 else []))


def save_png(fig, path: Path, **kwargs) -> Path:
    """The figure as PNG at `path`, atomically; a symlink there is replaced, not followed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, **kwargs)
    finally:
        plt.close(fig)  # a results dir with many datasets would otherwise hold every figure until the end
    atomic_write_bytes(path, buf.getvalue())
    return path
