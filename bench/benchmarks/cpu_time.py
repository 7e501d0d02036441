"""CPU seconds used by this process and every process under it, for a CPU-time bound.

The cores can be busy for at most cores x wall seconds, so CPU time / cores is the shortest
wall time any schedule of the same work could reach on this machine. Live workers (a loky
pool that outlives a call) are read from /proc; ended ones count through their parent's
reaped-children times.
"""
from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()   # fields 3 onwards: the name may hold spaces


def tree_cpu_s(root: int | None = None) -> float | None:
    """User + system seconds of process `root` (default: this one), its reaped children and
    every live descendant; None where /proc cannot be read."""
    root = os.getpid() if root is None else root
    stats = {}
    for pid in os.listdir("/proc") if Path("/proc/self/stat").exists() else []:
        if pid.isdigit() and (fields := _stat(pid)) is not None and len(fields) > 14:
            stats[int(pid)] = fields
    if root not in stats:
        return None
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)     # field 4: ppid
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        # fields 14-17: utime, stime, cutime, cstime (the last two: its reaped children)
        total += sum(int(v) for v in stats[pid][11:15])
        todo += children.get(pid, [])
    return total / TICKS
