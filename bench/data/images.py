"""What image loaders share: reading members of a directory or a .tar.gz alike,
decoding one image with an error that names it, and cache keys for directories."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import BenchError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class Archive:
    """The files under a directory or inside a .tar.gz, by relative path ('a/b.jpg')."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            self._files = {p.relative_to(self.path).as_posix(): p for p in sorted(self.path.rglob("*")) if p.is_file()}
            self._tar = None
        elif self.path.is_file() and self.path.name.endswith((".tar.gz", ".tgz", ".tar")):
            try:
                self._tar = tarfile.open(self.path)
                self._files = {m.name.lstrip("./"): m for m in self._tar.getmembers() if m.isfile()}
            except (tarfile.TarError, OSError, EOFError) as e:
                raise BenchError(f"cannot read archive {self.path}: {e}") from None
        else:
            raise BenchError(f"{self.path} is neither a directory nor a .tar.gz archive")

    def names(self) -> list[str]:
        return list(self._files)

    def read(self, name: str) -> bytes:
        if name not in self._files:
            raise BenchError(f"{self.path}: no file {name!r}")
        if self._tar is None:
            return self._files[name].read_bytes()
        try:
            return self._tar.extractfile(self._files[name]).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BenchError(f"cannot read {name} from {self.path}: {e}") from None

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if self._tar is not None else str(self.path / name)


def decode_image(data: bytes, where: str, *, size: int | None = None, channels: int = 3,
                 crop_square: bool = False) -> np.ndarray:
    """uint8 C x H x W. `crop_square` centre-crops first; `size` resizes to size x size."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now, so a truncated file fails here and names itself
            img = img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BenchError(f"corrupt or unreadable image {where}: {e}") from None
    if crop_square:
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def tree_digest(path: Path) -> str:
    """A cheap cache key for a directory: names, sizes and modification times of its files."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
