"""What image loaders share: reading members of a directory or a .tar.gz alike,
decoding one image with an error that names it, and cache keys for directories."""
from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import BenchError
from bench.storage import file_digest

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Larger images are refused before decoding: a few bytes of PNG can claim gigapixels (a
# decompression bomb). Below PIL's own limit (89 Mpx), so ours is the one that speaks.
MAX_PIXELS = 64_000_000
# Modes whose samples are 16-bit (PNG / TIFF 16-bit grey; PIL decodes some as 32-bit "I"
# holding 0..65535): PIL's convert("L") would clip them at 255, so they are scaled instead.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


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
    """uint8 C x H x W. `crop_square` centre-crops first; `size` resizes to size x size.

    16-bit grey is scaled to 8 bits (divided by 257, so 65535 -> 255), palette images go
    through their RGB(A) colours, and an image over MAX_PIXELS is refused before decoding.
    """
    try:
        # PIL warns (DecompressionBombWarning) above its limit and raises above twice that; as
        # an error here, either becomes the one line below instead of a printed warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise BenchError(f"image {where} is {w} x {h} = {w * h / 1e6:.0f} megapixels, over the limit of "
                                     f"{MAX_PIXELS / 1e6:.0f} (a decompression bomb, or too large to use)")
                img.load()  # decode now, so a truncated file fails here and names itself
                img = _to_mode(img, "L" if channels == 1 else "RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise BenchError(f"image {where} is over the limit of {MAX_PIXELS / 1e6:.0f} megapixels "
                         f"(a decompression bomb, or too large to use); PIL says: {e}") from None
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


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """`img` as "L" or "RGB", keeping the full range of 16-bit grey and the colours of a palette."""
    if img.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.round(grey / 257), 0, 255).astype(np.uint8), "L")
    elif img.mode in ("P", "PA"):
        # Through the palette's colours; RGBA first when it has a transparent entry, which
        # PIL would otherwise warn about on the way to RGB.
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img.convert(mode)


def tree_digest(path: Path) -> str:
    """A cheap cache key for a directory: names, sizes and modification times of its files."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def files_digest(root: Path, paths: list[Path]) -> str:
    """sha256 over the bytes of `paths`, in order, each with its path relative to `root`.

    Unlike `tree_digest`, an edit that keeps a file's size and modification time still
    changes the key; only the listed files count, not whatever else lies in the tree.
    """
    h = hashlib.sha256()
    for p in paths:
        try:
            inner = file_digest(p)
        except OSError as e:
            raise BenchError(f"cannot read {p}: {e}") from None
        h.update(f"{Path(p).relative_to(root).as_posix()}\0{inner}\n".encode())
    return h.hexdigest()
