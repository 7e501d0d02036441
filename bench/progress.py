"""Stage lines: where a sweep's jobs are, in a log that no progress bar reaches.

On a terminal, tqdm's bars show a job's progress and this module prints nothing. When
stderr is not a terminal (CI, nohup, a cluster job) tqdm stays silent (`disable=None`),
so each job prints its stages to stderr as plain lines instead, each with the time the
stage has taken so far:

  [stage] identity on fashion-mnist[class] seed 0: designated model: target resnet18 epoch 2/4, val 0.8812 (31s)

The stages are those the pipeline names (data, designated model, defense fit, attacker
fit), a release (a `predict` with a `desc`), and the epochs of the training loop.

At most one line every `EVERY_S` seconds per process: a line that comes sooner is held
back and printed once the interval has passed (at the next line, or at the next `tick`,
which the training and prediction loops call once per batch), unless a newer line has
replaced it by then. So a log shows each process's latest state every few seconds and
never a backlog, and a long stage that starts right after another still gets its line.
Every line is flushed: loky and Dask workers inherit stderr, so their lines reach the
same log as the sweep's own, as they are written.

Lines are printed only inside `job` (a sweep's preparation or run). The training loop or
a plugin used on its own prints nothing new, and neither does planning, whose errors
stay one line on stderr.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable

EVERY_S = 5.0


class RateLimitedLines:
    """Lines for `write`, at most one every `every_s` seconds; a line that comes sooner waits
    for the next chance and is replaced by any newer one."""

    def __init__(self, write: Callable[[str], None], every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.write, self.every_s, self.clock = write, every_s, clock
        self._last = -math.inf
        self._held: str | None = None

    def line(self, text: str) -> None:
        self._held = text
        self.tick()

    def tick(self) -> None:
        """Print the held line if the interval since the last one has passed."""
        if self._held is None:
            return
        now = self.clock()
        if now - self._last >= self.every_s:
            # Updated before writing: a write interrupted by a job's time limit leaves no line held twice.
            text, self._held, self._last = self._held, None, now
            self.write(text)

    def drop(self) -> None:
        """Forget the held line: what it says is over."""
        self._held = None


def _to_stderr(text: str) -> None:
    # sys.stderr looked up at each line: a test's capture or a worker's own stream, whichever is current.
    print(text, file=sys.stderr, flush=True)


LINES = RateLimitedLines(_to_stderr)


@dataclass(frozen=True)
class _Where:
    names: tuple[str, ...]   # the job's label, then its open stages, outermost first
    started: float           # when the innermost of them began (LINES.clock)


# A context variable, not a global: Dask may run jobs in several threads of one process.
_where: ContextVar[_Where | None] = ContextVar("bench_progress_where", default=None)


def _stderr_is_a_log() -> bool:
    """tqdm's own test (`disable=None`): bars when stderr is a terminal, stage lines when it is not."""
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and not stream.isatty()


@contextmanager
def job(label: str):
    """Stage lines within the block begin with `label`. A no-op when stderr is a terminal."""
    if not _stderr_is_a_log():
        yield
        return
    token = _where.set(_Where((label,), LINES.clock()))
    try:
        yield
    finally:
        _where.reset(token)
        LINES.drop()


@contextmanager
def stage(name: str):
    """Report that `name` began and, unless it raised, that it ended and how long it took.

    A stage that raises gets no line: the run's `[failed]` line says why.
    """
    outer = _where.get()
    if outer is None:
        yield
        return
    LINES.line(_line(outer.names, f"{name}..."))
    inner = _Where(outer.names + (name,), LINES.clock())
    token = _where.set(inner)
    try:
        yield
    finally:
        _where.reset(token)
    LINES.line(_line(outer.names, f"{name} done ({duration(LINES.clock() - inner.started)})"))


def step(text: str) -> None:
    """Progress within the current stage (an epoch, a batch), with the time the stage has taken so far."""
    where = _where.get()
    if where is not None:
        LINES.line(_line(where.names, f"{text} ({duration(LINES.clock() - where.started)})"))


def tick() -> None:
    """Print a held line whose time has come; cheap enough to call once per batch."""
    if _where.get() is not None:
        LINES.tick()


def _line(names: tuple[str, ...], text: str) -> str:
    return "  [stage] " + ": ".join(names + (text,))


def duration(seconds: float) -> str:
    """`4.2s`, `31s`, `4m10s`, `2h05m`: short for a log line, precise enough for a person."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
