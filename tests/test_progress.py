"""A sweep whose output goes to a file (CI, nohup, a cluster job) says at once that
it began, prints its stages as plain rate-limited lines, and ends each run's line with its wall time,
the sweep's count and an ETA."""
import io
import os
import re
import subprocess
import sys

import pytest

from bench import progress
from bench.progress import RateLimitedLines, duration
from bench.runner import SweepClock
from conftest import REPO

SMOKE = ["run", "--dataset", "synthetic", "--preset", "smoke", "--seeds", "0", "--no-plots"]
HEADER = re.compile(r"^\d+ run\(s\) requested on synthetic, preset smoke")
DURATION = r"(?:\d+(?:\.\d)?s|\d+m\d\ds|\d+h\d\dm)"
ELAPSED = rf"\({DURATION}\)$"
RUN_LINE = re.compile(rf"^  \[ok\] \[(\d+)/(\d+)\] identity x \w+ on synthetic\[\w+\] seed 0 "
                      rf"\(({DURATION}), ETA ({DURATION})\)$")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# --- the rate limiter ---------------------------------------------------------------------------

def test_a_line_that_comes_too_soon_waits_and_only_the_latest_is_printed():
    clock, out = FakeClock(), []
    lines = RateLimitedLines(out.append, every_s=5, clock=clock)
    lines.line("a")                      # the first line: at once
    clock.now = 1
    lines.line("b")                      # too soon: held back
    clock.now = 2
    lines.line("c")                      # replaces b
    clock.now = 4.9
    lines.tick()
    assert out == ["a"]
    clock.now = 5
    lines.tick()                         # its time has come
    assert out == ["a", "c"]
    clock.now = 30
    lines.tick()                         # nothing held: nothing printed
    assert out == ["a", "c"]
    clock.now = 31
    lines.line("d")
    assert out == ["a", "c", "d"]        # the interval had passed: at once
    clock.now = 32
    lines.line("e")
    lines.drop()                         # its job ended: what it said is over
    clock.now = 60
    lines.tick()
    assert out == ["a", "c", "d"]


def test_a_stream_of_lines_is_limited_to_one_per_interval():
    clock, printed = FakeClock(), []
    lines = RateLimitedLines(lambda text: printed.append(clock.now), every_s=5, clock=clock)
    for i in range(600):                 # a line every 0.1 s for a minute, a tick between
        clock.now = i / 10
        lines.line(f"batch {i}")
        clock.now += 0.05
        lines.tick()
    gaps = [b - a for a, b in zip(printed, printed[1:])]
    assert len(printed) == 12 and min(gaps) >= 5


# --- when lines are printed ---------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_only_in_a_job_and_only_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress.LINES, "every_s", 0)

    def a_job():
        with progress.job("identity on synthetic seed 0"), progress.stage("designated model"):
            progress.step("target cnn epoch 1/4")
            progress.tick()

    terminal, log = Terminal(), io.StringIO()  # a StringIO is no terminal
    for stream in (terminal, log):
        monkeypatch.setattr(sys, "stderr", stream)
        progress.step("outside any job")
        with progress.stage("outside any job"):
            progress.step("still outside")
        a_job()
    assert terminal.getvalue() == ""     # the tqdm bars show it
    lines = log.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == "  [stage] identity on synthetic seed 0: designated model..."
    assert re.match(r"  \[stage\] identity on synthetic seed 0: designated model: target cnn epoch 1/4 \(0\.\ds\)$",
                    lines[1]), lines
    assert re.match(r"  \[stage\] identity on synthetic seed 0: designated model done \(0\.\ds\)$", lines[2]), lines


def test_a_stage_that_raises_reports_no_end(monkeypatch):
    monkeypatch.setattr(progress.LINES, "every_s", 0)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with pytest.raises(ValueError), progress.job("run"), progress.stage("attacker adaptive fit"):
        raise ValueError("boom")
    assert sys.stderr.getvalue().splitlines() == ["  [stage] run: attacker adaptive fit..."]


def test_durations_read_well():
    assert [duration(s) for s in (0.04, 9.94, 12.4, 59.6, 250, 3600 * 2 + 300)] == \
        ["0.0s", "9.9s", "12s", "1m00s", "4m10s", "2h05m"]


# --- count and ETA --------------------------------------------------------------------------------

def test_eta_from_the_mean_wall_time_and_the_jobs():
    clock = SweepClock(total=5, jobs=2)
    first = clock.ended("skipped", "a", None, 0.01)     # finished by another sweep: no timing
    assert (first.done, first.total, first.eta_s) == (1, 5, None)
    second = clock.ended("ok", "b", None, 10.0)
    assert (second.done, second.eta_s) == (2, 10.0 * 3 / 2)
    third = clock.ended("failed", "c", "boom", 30.0)
    assert third.eta_s == 20.0 * 2 / 2 and third.reason == "boom"
    fourth = clock.ended("ok", "d", None, 20.0)
    assert fourth.eta_s == 20.0                          # the last run alone takes a whole run's time
    assert clock.ended("ok", "e", None, 20.0).eta_s == 0.0


# --- whole sweeps -------------------------------------------------------------------------------

def test_every_stage_is_reported_with_its_time(main_inprocess, tmp_path, monkeypatch):
    monkeypatch.setattr(progress.LINES, "every_s", 0)  # every line, not one every few seconds
    out = main_inprocess(*SMOKE, "--defense", "noise", "--attacker", "adaptive", "--results-dir", tmp_path / "r")
    assert out.returncode == 0, out.stderr
    assert HEADER.match(out.stdout.splitlines()[0]), out.stdout
    stages = out.stderr.splitlines()
    assert all(line.startswith("  [stage] ") for line in stages), out.stderr
    prep = "  [stage] identity on synthetic[class] seed 0: "
    for expected in (prep + "data done ", prep + "designated model: target cnn epoch 1/1, val ",
                     prep + "designated model done ", prep + "defense identity fit done ",
                     prep + "release test: batch 1/1 ", prep + "release test done ",
                     "  [stage] noise(sigma=0.2) on synthetic[class] seed 0: defense noise fit done ",
                     "  [stage] identity x adaptive on synthetic[class] seed 0: attacker adaptive fit: "
                     "adaptive cnn epoch 1/1, val ",
                     "  [stage] noise(sigma=0.2) x adaptive on synthetic[class] seed 0: attacker adaptive fit done "):
        found = [line for line in stages if line.startswith(expected)]
        assert found and all(re.search(ELAPSED, line) for line in found), (expected, out.stderr)
    runs = [line for line in out.stdout.splitlines() if line.startswith("  [ok]")]
    assert [re.search(r"\[(\d)/2\]", line).group(1) for line in runs] == ["1", "2"], out.stdout


def test_a_parallel_sweep_logged_to_a_file(tmp_path):
    """What `nohup python -m bench run ... > log 2>&1` gets: one stream, not a terminal."""
    args = [*SMOKE, "--attacker", "adaptive,attribute", "--jobs", "2", "--results-dir", tmp_path / "r"]
    out = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    assert HEADER.match(lines[0]), out.stdout           # flushed before any work
    stages = [line for line in lines if line.startswith("  [stage] ")]
    # The preparation runs in this process, the runs in loky workers: both reach the log.
    assert any(line.startswith("  [stage] identity on synthetic[class] seed 0: ") for line in stages), out.stdout
    assert any(" x adaptive on " in line or " x attribute on " in line for line in stages), out.stdout
    runs = [RUN_LINE.match(line) for line in lines if line.startswith("  [ok]")]
    assert len(runs) == 2 and all(runs), out.stdout
    assert sorted((int(m.group(1)), int(m.group(2))) for m in runs) == [(1, 2), (2, 2)]
    assert max(runs, key=lambda m: int(m.group(1))).group(4) == "0.0s"  # the last one
    assert re.search(r"^done in \d+\.\ds; results in ", out.stdout, re.M), out.stdout
