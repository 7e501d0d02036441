"""What a run record says about the software that made it: package versions and the harness's commit."""
from __future__ import annotations

import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import torch

import bench


def versions() -> dict:
    # The installed distributions' versions (what `import timm; timm.__version__` gives) without importing
    # timm, which costs ~2 s in every worker that writes a record.
    return {"python": platform.python_version(), "torch": torch.__version__, "timm": version("timm"),
            "joblib": version("joblib"), "bench": getattr(bench, "__version__", "0")}


def git_commit() -> str | None:
    """The harness's commit, with `-dirty` when its working tree has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here)
        # --no-optional-locks: a run killed mid-status must not leave the checkout's index.lock behind.
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, cwd=here)
    except (OSError, subprocess.TimeoutExpired):  # not a git checkout (an installed wheel): nothing to record
        return None
    commit = head.stdout.strip()
    return (commit + ("-dirty" if dirty.stdout.strip() else "")) if commit else None
