"""Torch threads for jobs that share a machine with other harness commands.

A job alone takes cores / jobs torch threads. Two commands side by side (a sweep and
a demo, a sweep and the tests) used to take that much each: threads that outnumber the
cores wait on each other at every OpenMP barrier, spinning, and ran many times slower
(an attack took 16x as long beside two other commands as alone). So:

- Registry: each harness command running jobs on this machine has an entry, a file named
  by its pid in `$BENCH_CORES_DIR` (default `<tmp>/bench-cores-<uid>/`), holding its job
  count, its CPUs and its process's start time. The first job of a command writes it (in
  the command's own process, or on its behalf in a loky worker, the command's child).
  An entry whose process has ended (or was killed, or whose pid now belongs to another
  process) is ignored and removed by whoever reads it next; a command's own entry is
  removed when its process exits.
- Share: a job takes max(1, free cores // jobs of every live command using those cores),
  where a command with an explicit OMP_NUM_THREADS counts as jobs x that many threads
  taken off the free cores. Alone, that is cores / jobs, as before.
- Running jobs: a command's jobs count only while they run. Each job marks itself with a file
  `<command pid>.busy.<worker pid>` for as long as it runs (`busy()`); a command counts as
  min(jobs, its live marks), or as its jobs when none is live. So the last job of a stage,
  whose siblings have finished, takes the cores they left at its next rebalance instead of
  keeping cores / jobs threads while the others idle.
- Rebalance: `rebalance()`, which the training loop calls after every batch (it does work
  at most every `REBALANCE_S` seconds), recomputes the share and applies it, so a command
  started earlier shrinks when another starts and grows back when it ends.
- OpenMP: libgomp's threads spin up to 300000 rounds at a barrier before they sleep; beside
  other busy processes that spinning takes the cores the others need. `openmp_defaults()`,
  which `bench.cli.main` calls before torch loads, sets GOMP_SPINCOUNT to `SPIN_COUNT`
  unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set already.

OMP_NUM_THREADS, when the user sets it, is the user's choice: jobs keep that many threads and
never rebalance. (joblib sets it in every loky worker too, to cores / jobs; a command's process
records in its environment whether the user had set it, and its workers go by that.) A Dask
worker, possibly on another machine whose commands this registry does not see, keeps what its
nanny sets (OMP_NUM_THREADS=1), else cores / jobs, as before. BENCH_THREAD_POLICY=static restores
the behaviour from before this module everywhere: cores / jobs threads, no registry, no
rebalancing, libgomp's own spinning.

Thread counts change no result beyond float reduction order: a run gives bit-identical
numbers again only with the same number of torch threads (OMP_NUM_THREADS=N, or
BENCH_THREAD_POLICY=static, pins it).
"""
from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

POLICIES = ("shared", "static")
REBALANCE_S = 2.0        # rebalance() reads the registry at most this often
SPIN_COUNT = "10000"     # libgomp spin rounds before a waiting thread sleeps (its default: 300000)
BUSY = ".busy."          # in the name of a running job's mark: <command pid>.busy.<worker pid>
USER_OMP_MARK = "BENCH_USER_OMP_NUM_THREADS"   # "1" or "0": did the command's user set OMP_NUM_THREADS


def policy(environ=None) -> str:
    """`shared` (the default) or `static` (BENCH_THREAD_POLICY=static: cores / jobs, nothing shared)."""
    value = (os.environ if environ is None else environ).get("BENCH_THREAD_POLICY", "").strip() or "shared"
    if value not in POLICIES:
        raise BenchError(f"BENCH_THREAD_POLICY={value!r}: expected one of {', '.join(POLICIES)}")
    return value


def _mark_command_environment(environ) -> None:
    """In a command's own process: record in the environment its workers inherit whether the user set
    OMP_NUM_THREADS. joblib sets it in every loky worker it starts (to cores / jobs), so a worker
    cannot tell from the variable alone."""
    if multiprocessing.parent_process() is None:
        environ[USER_OMP_MARK] = "1" if environ.get("OMP_NUM_THREADS", "").strip() else "0"


def explicit_threads() -> int | None:
    """Threads per process the user pinned with OMP_NUM_THREADS (its first value: `4,2` nests), or None."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text:
        return None
    if multiprocessing.parent_process() is not None and os.environ.get(USER_OMP_MARK) == "0":
        return None  # a worker's, set by joblib: its command's user did not set it
    try:
        return max(1, int(text.split(",")[0]))
    except ValueError:
        return 1  # torch and OpenMP ignore a value they cannot read; count it as one thread


_mark_command_environment(os.environ)  # at import: before any worker starts (bench.runner imports this module)


def usable_cpus() -> frozenset[int]:
    """The CPUs this process may run on (its affinity), or range(cpu_count) where that is unknown."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return frozenset(range(os.cpu_count() or 1))


def openmp_defaults(environ=None) -> None:
    """Shorten libgomp's spinning, unless the user chose a wait policy or the static policy is on.

    Only before torch loads (libgomp reads its environment once, when it is loaded); it is
    inherited by every worker this process starts. Raises BenchError for an unknown policy.
    """
    environ = os.environ if environ is None else environ
    _mark_command_environment(environ)
    if policy(environ) == "static" or "torch" in sys.modules:
        return
    if not environ.get("OMP_WAIT_POLICY") and not environ.get("GOMP_SPINCOUNT"):
        environ["GOMP_SPINCOUNT"] = SPIN_COUNT


# --- the registry ------------------------------------------------------------------------
def registry_dir() -> Path | None:
    """The registry's directory, created if needed; None where it cannot be used (then nothing is shared)."""
    configured = os.environ.get("BENCH_CORES_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else None
    default = Path(tempfile.gettempdir()) / f"bench-cores-{uid if uid is not None else 'user'}"
    path = Path(configured) if configured else default
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # In a shared /tmp, a directory someone else made could feed this user's commands anything.
        if uid is not None and not configured and path.stat().st_uid != uid:
            _warn_once(f"the cores registry {path} belongs to another user; this command does not share the cores "
                       "with other harness commands (set BENCH_CORES_DIR to a directory of yours)")
            return None
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write into {path}")
    except OSError as e:
        _warn_once(f"the cores registry {path} cannot be used ({e.strerror or e}); this command does not share "
                   "the cores with other harness commands (set BENCH_CORES_DIR to a writable directory)")
        return None
    return path


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """One line on stderr, once per process: the registry is advisory, a run never fails for it."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _entry(path: Path) -> dict | None:
    """The entry in file `path` if it is one this module writes (every field of the right type), else None."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or set(entry) != {"pid", "started", "jobs", "threads", "cpus"}:
        return None
    def whole(v, low=1):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low
    if not (whole(entry["pid"]) and whole(entry["jobs"]) and (entry["threads"] is None or whole(entry["threads"]))
            and (entry["started"] is None or isinstance(entry["started"], str))
            and isinstance(entry["cpus"], list) and all(whole(c, 0) for c in entry["cpus"])):
        return None
    return entry


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 (state) onwards of /proc/PID/stat, or None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2, in parentheses) may hold spaces: count after its ')'.
    return stat[stat.rfind(")") + 2:].split()


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where that cannot be read."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None   # field 22


def alive(pid: int, started: str | None) -> bool:
    """Process `pid` runs, and is the one that started at `started` (a pid may be reused)."""
    fields = _proc_stat(pid)
    if fields is not None and len(fields) > 19:
        # A zombie (ended, not yet reaped by its parent) has a stat file but uses no core.
        return fields[0] not in ("Z", "X") and (started is None or fields[19] == started)
    if Path("/proc/self/stat").exists():  # /proc works, but has no such pid
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except OSError:
        return False
    return True


def register(pid: int, jobs: int, threads: int | None = None) -> Path | None:
    """Write command `pid`'s entry: `jobs` jobs, each with `threads` fixed threads (None: a share).
    Returns its path, or None where the registry cannot be used."""
    root = registry_dir()
    if root is None:
        return None
    entry = {"pid": pid, "started": start_time(pid), "jobs": max(1, int(jobs)), "threads": threads,
             "cpus": sorted(usable_cpus())}
    tmp = root / f".{pid}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, root / str(pid))  # atomic: a reader sees the old entry or the new one, never half
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return root / str(pid)


def unregister(pid: int) -> None:
    root = registry_dir()
    if root is not None:
        (root / str(pid)).unlink(missing_ok=True)


def live_commands() -> dict[int, dict]:
    """Entries of the commands that still run, by pid; entries of ended ones are removed."""
    root = registry_dir()
    if root is None:
        return {}
    live = {}
    try:
        names = os.listdir(root)
    except OSError:
        return {}
    running: dict[int, int] = {}
    for name in names:
        if BUSY in name:
            _count_busy(root / name, running)
            continue
        if not name.isdigit():
            continue
        path = root / name
        if not path.is_file():
            if path.exists():   # something else that merely has an entry's name (a directory, say)
                _warn_once(f"ignoring {path} in the cores registry: not an entry this harness writes")
            continue
        entry = _entry(path)
        if entry is None or entry["pid"] != int(name):
            if path.exists():
                _warn_once(f"ignoring {path} in the cores registry: not an entry this harness writes")
            continue
        if not alive(entry["pid"], entry["started"]):
            path.unlink(missing_ok=True)   # a well-formed entry of a command that has ended: ours, and stale
            continue
        live[entry["pid"]] = entry
    for pid, entry in live.items():
        entry["busy"] = running.get(pid, 0)
    return live


def _count_busy(path: Path, running: dict[int, int]) -> None:
    """Count the mark `path` of a running job for its command, or remove it if its process has ended.

    Only a file named `<command pid>.busy.<worker pid>` holding a start time (or nothing) is a mark:
    anything else is left alone, with a warning."""
    command, _, pid = path.name.partition(BUSY)
    if not (command.isdigit() and pid.isdigit()) or not path.is_file():
        _warn_once(f"ignoring {path} in the cores registry: not a job mark this harness writes")
        return
    try:
        started = path.read_text().strip() or None
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError):
        _warn_once(f"ignoring {path} in the cores registry: not a job mark this harness writes")
        return
    if started is not None and not started.isdigit():
        _warn_once(f"ignoring {path} in the cores registry: not a job mark this harness writes")
        return
    if alive(int(pid), started):
        running[int(command)] = running.get(int(command), 0) + 1
    else:
        path.unlink(missing_ok=True)


def _running_jobs(jobs: int, entry: dict | None) -> int:
    """The jobs of a command that take cores: those running, or all of them when none is marked."""
    marked = (entry or {}).get("busy", 0)
    return min(jobs, marked) if marked else jobs


@contextmanager
def busy():
    """Within the block, this process runs a job of its command (see "Running jobs" above)."""
    root = None if policy() == "static" or _in_dask_worker() else registry_dir()
    path = None
    if root is not None:
        path = root / f"{command_pid()}{BUSY}{os.getpid()}"
        try:
            path.write_text(start_time(os.getpid()) or "")
        except OSError:
            path = None
    try:
        yield
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def share(jobs: int, command: int | None = None, cpus: frozenset[int] | None = None,
          commands: dict[int, dict] | None = None) -> int:
    """Torch threads for each of `jobs` jobs of command `command`, beside the other live commands.

    Only commands whose CPUs overlap `cpus` (default: this process's) count. A command with
    fixed threads (OMP_NUM_THREADS) takes jobs x threads cores off the free ones; the rest are
    divided evenly among the jobs of every command that shares, `command`'s own included.
    Jobs count while they run (their `busy` marks), all of a command's when none is marked.
    """
    cpus = usable_cpus() if cpus is None else cpus
    commands = live_commands() if commands is None else commands
    fixed, sharing = 0, _running_jobs(max(1, jobs), commands.get(command))
    for pid, entry in commands.items():
        if pid == command or (entry.get("cpus") and not cpus.intersection(entry["cpus"])):
            continue
        if entry["threads"] is None:
            sharing += _running_jobs(entry["jobs"], entry)
        else:
            fixed += _running_jobs(entry["jobs"], entry) * entry["threads"]
    return max(1, (len(cpus) - fixed) // sharing)


def command_pid() -> int:
    """The pid of the harness command this process works for: its parent if it is a loky or
    multiprocessing worker, else itself."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getpid()


@contextmanager
def registered(jobs: int):
    """This process counts as a harness command with `jobs` jobs within the block: its entry is
    removed after (also on an exception), and jobs it ran in-process stop rebalancing.

    `setup` registers a command lazily without it (its entry then lasts as long as its process);
    this scopes both to the block, for a process that outlives its sweep (a notebook, a test session).
    """
    global _state
    pid = os.getpid()
    if policy() != "static":
        register(pid, jobs, explicit_threads())
    try:
        yield
    finally:
        unregister(pid)
        if _state is not None and _state.pid == pid:
            _state = None


# --- this process's jobs -------------------------------------------------------------------
@dataclass
class _Managed:
    pid: int          # the process that set it up (a forked child inherits this module's state)
    command: int      # whose jobs these are
    jobs: int
    threads: int      # what was last set
    checked: float    # time.monotonic() of the last look at the registry


_state: _Managed | None = None
_own_entries: set[Path] = set()   # entries naming this process, removed when it exits


def _remove_own_entries() -> None:
    for path in _own_entries:
        path.unlink(missing_ok=True)


atexit.register(_remove_own_entries)


def _in_dask_worker() -> bool:
    if "distributed" not in sys.modules:  # never imported: not a Dask worker (and no import paid here)
        return False
    try:
        from distributed import get_worker
        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    trace = os.environ.get("BENCH_CORES_TRACE")
    if trace:  # for benchmarks: which threads each process had, when
        try:
            with open(trace, "a") as f:
                f.write(f"{os.getpid()} {command_pid()} {time.time():.3f} {n}\n")
        except OSError:
            pass


def setup(jobs: int) -> int | None:
    """At the start of a job: take this job's share of the cores. Returns the threads set, or None
    when OMP_NUM_THREADS decides (the command is then registered with that many threads per job)."""
    global _state
    _state = None
    jobs = max(1, int(jobs))
    if _in_dask_worker():
        # As before: what its nanny set (OMP_NUM_THREADS=1) wins, else cores / jobs. Its machine may be
        # another, whose commands this registry does not see.
        fixed = 1 if os.environ.get("OMP_NUM_THREADS", "").strip() else None
    else:
        fixed = explicit_threads()
    if policy() == "static" or _in_dask_worker():
        if fixed is None:
            n = max(1, len(usable_cpus()) // jobs)
            _set_threads(n)
            return n
        return None
    command = command_pid()
    entry = register(command, jobs, fixed)
    if entry is not None and command == os.getpid():
        _own_entries.add(entry)
    if fixed is not None:
        return None
    n = share(jobs, command)
    _set_threads(n)
    _state = _Managed(os.getpid(), command, jobs, n, time.monotonic())
    return n


def rebalance(now: float | None = None) -> int | None:
    """Apply this job's current share if it changed; does work at most every REBALANCE_S seconds.

    Only in a process whose job `setup` gave a share, and only while nobody else changed torch's
    thread count since (a caller that sets it, e.g. a test pinning one thread, has chosen).
    Returns the threads in force when it looked, else None.
    """
    state = _state
    if state is None:
        return None
    now = time.monotonic() if now is None else now
    if now - state.checked < REBALANCE_S:
        return None
    state.checked = now
    return _rebalance(state)


def _rebalance(state: _Managed) -> int | None:
    global _state
    import torch

    if state.pid != os.getpid() or torch.get_num_threads() != state.threads:
        _state = None
        return None
    commands = live_commands()
    if state.command not in commands:
        if not alive(state.command, None):
            return state.threads  # its command has ended (this worker outlived it): leave things be
        entry = register(state.command, state.jobs)  # removed by someone (a tmp cleaner): count it again
        if entry is not None and state.command == os.getpid():
            _own_entries.add(entry)
    n = share(state.jobs, state.command, commands=commands)
    if n != state.threads:
        _set_threads(n)
        state.threads = n
    return n
