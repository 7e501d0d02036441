"""What a run record says about the software and machine that made it: package versions, the harness's
commit, and the CPU (fp32 results are bit-identical only on one kind of CPU: its vector units decide how
oneDNN sums)."""
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


# The instruction sets that change which kernels oneDNN runs (and so the float rounding of a result).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu() -> str:
    """`AMD EPYC (avx2 avx512f avx512_bf16)`: the CPU's model name and the instruction sets among ISA_FLAGS."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: the model name alone
        pass
    isa = [f for f in ISA_FLAGS if f in flags]
    return f"{model} ({' '.join(isa)})" if isa else model


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
