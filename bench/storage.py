"""Atomic, checksummed files: the one way the harness writes anything it later loads.

Every write goes to a temporary file in the same directory and is renamed into
place, so a reader sees the old file or the new one, never half of one. Tensor
files get a sidecar `<file>.sha256`; a load that does not match it is treated as
absent (and reported), so a file cut short by a kill is rebuilt, never loaded;
so is one that matches its checksum but still cannot be loaded.

A write the filesystem refuses (full disk, quota, read-only, permissions) is a
`StorageError`: one line naming the file, and no partial file left in its place.
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

from bench.errors import BenchError, one_line


class StorageError(BenchError):
    """The filesystem refused a write (no space left, quota, read-only, permissions, not a directory)."""


def _storage_error(e: OSError, action: str, path) -> StorageError:
    """'no space left on device writing results/runs/x.json' from the OSError of that write."""
    reason = e.strerror or (os.strerror(e.errno) if e.errno else None) or type(e).__name__
    return StorageError(f"{reason[:1].lower()}{reason[1:]} {action} {path}")


def cache_root() -> Path:
    """`$BENCH_CACHE`, else `~/.cache/bench`."""
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file and a rename; StorageError (naming `path`) when refused."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _storage_error(e, "writing", path) from e
    try:
        # mkstemp makes the file owner-only; give it the permissions any new file gets (umask), so a
        # results/ directory or cache shared by a group stays readable to it.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _storage_error(e, "writing", path) from e
        raise


def check_writable_dir(path: Path, option: str) -> None:
    """StorageError unless `path` is a directory this process can create files in, or can be created.

    Nothing is left behind: a directory that does not exist yet is not created; its nearest existing
    ancestor is probed instead (a file created and removed at once).
    """
    path = Path(path)
    if str(path) == "":
        raise StorageError(f"{option} is empty; give a directory, e.g. {option} results")
    if path.is_symlink() and not path.exists():
        raise StorageError(f"{option} {path} is a broken symbolic link (to {os.readlink(path)})")
    probe = path
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:  # pragma: no cover - the root always exists
            break
        probe = probe.parent
    if not probe.is_dir():
        where = "is" if probe == path else f"lies under {probe}, which is"
        raise StorageError(f"{option} {path} {where} not a directory")
    try:
        _probe_write(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise StorageError(f"{option} {path} cannot be written: creating a file in {probe} fails "
                           f"({reason[:1].lower()}{reason[1:]})") from None


def _probe_write(directory: Path) -> None:
    """Create and remove a file in `directory`: the only check that asks the filesystem itself
    (os.access trusts mode bits, which root ignores and which say nothing of read-only mounts)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bench-probe.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


KEY_FIELD = "cache_key"


def save_tensors(path: Path, obj: dict, key: str) -> None:
    """torch.save `obj` (a dict of tensors, lists, numbers, strings) with a checksum sidecar.

    `key` (what the file was computed for) is stored inside the checksummed payload, so that a
    valid file copied over another key's file is recognised as not that key's (`load_tensors`).
    """
    buf = io.BytesIO()
    torch.save({**obj, KEY_FIELD: key}, buf)
    data = buf.getvalue()
    # The payload is renamed into place before its checksum: a kill in between
    # leaves a payload without a matching sidecar, which `load_tensors` rejects.
    atomic_write_bytes(Path(path), data)
    atomic_write_bytes(_sidecar(path), hashlib.sha256(data).hexdigest().encode())


def load_tensors(path: Path, key: str) -> Any | None:
    """The object saved at `path` for `key`, or None when absent, corrupt or computed for another
    key (with a warning)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
        sidecar = _sidecar(path)
        expected = sidecar.read_text().strip() if sidecar.exists() else None
    except (OSError, UnicodeDecodeError) as e:
        warnings.warn(f"cache file {path} cannot be read ({type(e).__name__}: {e}); rebuilding it",
                      RuntimeWarning, stacklevel=2)
        return None
    if expected != hashlib.sha256(data).hexdigest():
        warnings.warn(f"cache file {path} fails its checksum; rebuilding it", RuntimeWarning, stacklevel=2)
        return None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # a sidecar recomputed over garbage, a file from an incompatible torch, ...
        # torch's own message goes on to advise weights_only=False, which would unpickle the file: not ours.
        reason = one_line(e) if "weights_only" not in str(e) else f"{type(e).__name__}: not a file of tensors"
        warnings.warn(f"cache file {path} matches its checksum but cannot be loaded ({reason}); rebuilding it",
                      RuntimeWarning, stacklevel=2)
        return None
    if not isinstance(obj, dict) or KEY_FIELD not in obj:
        warnings.warn(f"cache file {path} names no key (an older harness wrote it); rebuilding it",
                      RuntimeWarning, stacklevel=2)
        return None
    if obj[KEY_FIELD] != key:
        warnings.warn(f"cache file {path} was computed for another key than the one it is stored under; "
                      "rebuilding it", RuntimeWarning, stacklevel=2)
        return None
    del obj[KEY_FIELD]
    return obj


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
