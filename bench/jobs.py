"""How the jobs of a sweep run: through joblib (one in this process, more through loky or a Dask
cluster), each with an optional time limit that a plugin cannot swallow.
"""
from __future__ import annotations

import platform
import signal
import threading
from contextlib import contextmanager

from joblib import Parallel
from joblib.parallel import BACKENDS, get_active_backend

from bench.errors import BenchError

# joblib backends that run each job in the main thread of a process on this machine (SIGALRM reaches them),
# and those that run jobs on this machine at all.
MAIN_THREAD_BACKENDS = ("loky", "multiprocessing")
LOCAL_BACKENDS = ("loky", "multiprocessing", "threading", "sequential")


def run_parallel(jobs: int, tasks: list, ordered: bool = True):
    """Results of `tasks` (joblib delayed calls), yielded as they finish.

    With a local backend one job runs in this process (progress bars stay visible)
    and more go through loky. A cluster (Dask inside `parallel_config("dask")`) gets
    every job, even a lone one: the machine that starts the sweep may have no GPU.
    """
    if not active_backend_is(LOCAL_BACKENDS):
        # joblib hands work to the cluster only when asked for more than one job; it then uses all its workers.
        return Parallel(n_jobs=max(jobs, 2), return_as="generator" if ordered else "generator_unordered")(tasks)
    n_jobs = min(jobs, len(tasks))
    if n_jobs <= 1:
        return (fn(*args, **kwargs) for fn, args, kwargs in tasks)
    return Parallel(n_jobs=n_jobs, return_as="generator" if ordered else "generator_unordered")(tasks)


def active_backend_is(names: tuple[str, ...]) -> bool:
    backend, _ = get_active_backend()
    return isinstance(backend, tuple(BACKENDS[n] for n in names))


def check_timeout_supported(jobs: int) -> None:
    """Raise BenchError where a time limit could not interrupt jobs, rather than ignore it."""
    if not hasattr(signal, "setitimer"):
        raise BenchError(f"--timeout needs SIGALRM, which {platform.system()} does not have; run without --timeout")
    if threading.current_thread() is not threading.main_thread():
        raise BenchError("--timeout needs the sweep to start in the main thread: SIGALRM interrupts only that one")
    if jobs > 1 and not active_backend_is(MAIN_THREAD_BACKENDS):
        backend, _ = get_active_backend()
        raise BenchError(f"--timeout works with the loky backend, not {type(backend).__name__}: its jobs do not "
                         "run in a process's main thread, where SIGALRM could interrupt them")


class TimedOut(BaseException):
    """A job ran past `Env.timeout`. A BaseException, like KeyboardInterrupt, so that a
    plugin's `except Exception` cannot swallow it."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise TimedOut in this thread (which must be the main one) once `seconds` have passed."""
    if seconds is None:
        yield
        return
    armed = True

    def on_alarm(signum, frame):
        # A signal delivered just before the timer was cancelled runs its handler at the next bytecode,
        # possibly after the block: it must not interrupt whatever comes next.
        if armed:
            raise TimedOut(f"timed out after {seconds:g} s")

    # Outside the main thread this raises ValueError: the job fails loudly instead of running unlimited.
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        # None: a handler installed from C, which Python cannot reinstate; the default is the closest.
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
