"""Atomic, checksummed files: the one way the harness writes anything it later loads.

Every write goes to a temporary file in the same directory and is renamed into
place, so a reader sees the old file or the new one, never half of one. Tensor
files get a sidecar `<file>.sha256`; a load that does not match it is treated as
absent (and reported), so a file cut short by a kill is rebuilt, never loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch


def cache_root() -> Path:
    """`$BENCH_CACHE`, else `~/.cache/bench`."""
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file owner-only; give it the permissions any new file gets (umask), so a
        # results/ directory or cache shared by a group stays readable to it.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def save_tensors(path: Path, obj: Any) -> None:
    """torch.save `obj` (tensors, dicts, lists, numbers, strings) with a checksum sidecar."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    # The payload is renamed into place before its checksum: a kill in between
    # leaves a payload without a matching sidecar, which `load_tensors` rejects.
    atomic_write_bytes(Path(path), data)
    atomic_write_bytes(_sidecar(path), hashlib.sha256(data).hexdigest().encode())


def load_tensors(path: Path) -> Any | None:
    """The object saved at `path`, or None when absent or corrupt (with a warning)."""
    path = Path(path)
    if not path.exists():
        return None
    data = path.read_bytes()
    sidecar = _sidecar(path)
    expected = sidecar.read_text().strip() if sidecar.exists() else None
    if expected != hashlib.sha256(data).hexdigest():
        warnings.warn(f"cache file {path} fails its checksum; rebuilding it", RuntimeWarning, stacklevel=2)
        return None
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def file_digest(*paths: Path) -> str:
    """sha256 over the contents of the given files (the data cache's source key)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def digest_json(obj: Any) -> str:
    """A stable hash of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _sidecar(path: Path) -> Path:
    return Path(str(path) + ".sha256")
