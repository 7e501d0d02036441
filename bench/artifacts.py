"""Content-addressed cache of expensive shared steps: designated models, fitted
defenses, released splits, clean attacker models.

Each artifact is keyed by a hash of everything that determines it, built once
(a file lock makes concurrent workers wait for the first builder instead of
repeating its work), written atomically with a checksum over a payload that names its
key, and loaded with `torch.load(weights_only=True)` only when that key is the one asked for.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from filelock import FileLock

from bench.storage import atomic_write_json, cache_root, digest_json, load_tensors, save_tensors


class Artifacts:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_root() / "artifacts"

    def path(self, kind: str, key: dict) -> Path:
        return self.root / kind / f"{digest_json(key)[:24]}.pt"

    def get(self, kind: str, key: dict, build: Callable[[], dict]) -> dict:
        """The artifact for `key`, built by `build()` (a dict of tensors/numbers) if absent.

        The returned dict carries `build_s`, the seconds the original build took.
        """
        path = self.path(kind, key)
        # The whole key's digest (the file name holds a prefix of it), checked inside the payload.
        full = f"{kind}:{digest_json(key)}"
        obj = load_tensors(path, full)
        if obj is not None:
            return obj
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            obj = load_tensors(path, full)  # another worker may have built it while we waited
            if obj is not None:
                return obj
            start = time.perf_counter()
            obj = dict(build())
            obj["build_s"] = time.perf_counter() - start
            save_tensors(path, obj, full)
            atomic_write_json(path.with_suffix(".json"), key)  # what the hash stands for, for humans
        return obj
