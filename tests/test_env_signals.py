"""The environment: SIGTERM, a full disk, cache files that pass their checksum but do not load,
and a real installed distribution whose plugin fails to import (the in-process cases are in
`cases_env.py`)."""
import errno
import hashlib
import json
import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.registry import hparams_of
from bench.storage import StorageError, atomic_write_bytes, load_tensors, save_tensors
from conftest import REPO
from test_plugin_distribution import _distribution

SMOKE = ["run", "--dataset", "synthetic", "--preset", "smoke", "--no-plots"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _records(runs: Path) -> dict:
    """Every run file, each a complete record (json.loads fails on a torn one)."""
    return {p.name: json.loads(p.read_text()) for p in runs.glob("*.json")}


def _session_members(sid: int) -> list[str]:
    """Processes still alive (not zombies) in session `sid`, as 'pid cmdline'."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{stat.parent.name} {cmd[:120]}")
    return out


# --- SIGTERM ------------------------------------------------------------------------------------

def test_sigterm_stops_a_parallel_sweep_like_ctrl_c(tmp_path):
    res, runs, log = tmp_path / "results", tmp_path / "results" / "runs", tmp_path / "sweep.log"
    sweep = [*SMOKE, "--attacker", "adaptive,attribute,inversion", "--seeds", "0-1", "--jobs", "2",
             "--results-dir", res]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench", *map(str, sweep)], cwd=REPO,
                                env={**os.environ, **ONE_THREAD}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(runs.glob("*.json")):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no run finished in time\n" + log.read_text()
            time.sleep(0.05)
        assert len(_session_members(proc.pid)) > 1, "the loky workers should be running"
        proc.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` or a scheduler does
        code = proc.wait(timeout=60)
        text = log.read_text()
        assert code == 128 + signal.SIGTERM, text
        assert "interrupted: finished runs are saved; the same command resumes" in text
        assert "Traceback" not in text, text
        records = _records(runs)
        # The sweep's own message only: loky's resource tracker does not add a "leaked semaphore" warning.
        deadline = time.monotonic() + 15
        while _session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "leaked semaphore" not in log.read_text(), log.read_text()
        assert 1 <= len(records) < 6 and all(r["status"] == "ok" for r in records.values()), records
        # No worker, resource tracker or anything else of the sweep outlives it.
        deadline = time.monotonic() + 15
        while (left := _session_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, left
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_sigterm_handler_is_restored(main_inprocess, tmp_path):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        out = main_inprocess("leaderboard", "--results-dir", tmp_path / "none")
        assert out.returncode == 2
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_in_process_is_exit_143(main_inprocess, tmp_path, monkeypatch):
    """The handler raises in the main thread; whatever runs there stops as on Ctrl-C."""
    import bench.planning

    def plan(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(bench.planning, "plan_specs", plan)
    out = main_inprocess(*SMOKE, "--attacker", "adaptive", "--results-dir", tmp_path / "r")
    assert out.returncode == 143 and "interrupted: finished runs are saved" in out.stderr


# --- a full disk --------------------------------------------------------------------------------

def test_full_disk_while_writing_a_record(main_inprocess, tmp_path, monkeypatch):
    res = tmp_path / "results"
    runs = res / "runs"
    real_fsync = os.fsync
    written = []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).parent == runs.resolve():
            if written:  # the first record goes through, the disk is full for the second
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(target)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = main_inprocess(*SMOKE, "--attacker", "adaptive,attribute", "--results-dir", res)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert errors[0].startswith("error: no space left on device writing ") and str(runs) in errors[0], errors[0]
    # The finished record is intact, the failed one is not there at all (not marked done), no temp file.
    (done,) = _records(runs).values()
    assert done["status"] == "ok"
    assert errors[0].endswith(".json") and not Path(errors[0].split(" writing ")[1]).exists()
    assert sorted(p.name for p in runs.iterdir()) == [f"{done['run_id']}.json"]

    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the same command finishes the rest
    again = main_inprocess(*SMOKE, "--attacker", "adaptive,attribute", "--results-dir", res)
    assert again.returncode == 0, again.stderr
    assert "1 ok, 1 already done" in again.stdout
    assert _records(runs)[f"{done['run_id']}.json"] == done


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EDQUOT, "disk quota exceeded"),
                                         (errno.EROFS, "read-only file system")])
def test_refused_write_is_one_line_naming_the_file(tmp_path, monkeypatch, code, words):
    target = tmp_path / "d" / "x.json"
    target.parent.mkdir()
    target.write_text("old\n")
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(StorageError) as e:
        atomic_write_bytes(target, b"new\n")
    assert str(e.value) == f"{words} writing {target}"
    assert isinstance(e.value, BenchError) and e.value.exit_code == 2
    assert target.read_text() == "old\n" and sorted(p.name for p in target.parent.iterdir()) == ["x.json"]
    # It crosses from a loky worker to the main process as itself (the same __reduce__ as a pickle).
    again = copy.deepcopy(e.value)
    assert type(again) is StorageError and str(again) == str(e.value)


# --- cache files that pass their checksum but do not load ---------------------------------------

def _garbage_with_a_matching_checksum(path: Path) -> None:
    data = b"not a torch file, but its checksum was recomputed over it\n"
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(data).hexdigest())


def test_load_tensors_warns_and_returns_none_on_an_unloadable_file(tmp_path):
    path = tmp_path / "a.pt"
    save_tensors(path, {"x": torch.zeros(2)}, "k")
    assert torch.equal(load_tensors(path, "k")["x"], torch.zeros(2))
    _garbage_with_a_matching_checksum(path)
    with pytest.warns(RuntimeWarning, match=r"a\.pt matches its checksum but cannot be loaded.*rebuilding") as w:
        assert load_tensors(path, "k") is None
    assert "weights_only" not in str(w[0].message)   # torch's advice to unpickle is not passed on


def test_cache_file_that_passes_its_checksum_but_fails_to_load_is_rebuilt(cli, tmp_path, isolated_cache):
    first = cli(*SMOKE, "--attacker", "adaptive", "--results-dir", tmp_path / "r1", env_extra=ONE_THREAD)
    assert first.returncode == 0, first.stderr
    victim = next((isolated_cache / "artifacts" / "model").glob("*.pt"))
    _garbage_with_a_matching_checksum(victim)
    second = cli(*SMOKE, "--attacker", "adaptive", "--results-dir", tmp_path / "r2", env_extra=ONE_THREAD)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"cache file {victim} matches its checksum but cannot be loaded" in second.stderr
    assert "Traceback" not in second.stderr
    assert victim.read_bytes().startswith(b"PK")  # rebuilt: a torch file again, with its checksum
    (r1,), (r2,) = [[json.loads(p.read_text()) for p in (tmp_path / r / "runs").glob("*.json")] for r in ("r1", "r2")]
    assert r1["metrics"]["clean_acc"] == r2["metrics"]["clean_acc"]  # the same model, built again


# --- a real distribution whose plugin fails to import -------------------------------------------

def test_broken_distribution_is_listed_skipped_by_all_and_refused_by_name(cli, tmp_path):
    site = tmp_path / "site"
    env = _distribution(site, "shinydefense", "[bench.defenses]\nshiny = shinydefense:Shiny\n")
    (site / "shinydefense.py").write_text("from bench.protocol import Defense\n\nclass Shiny(Defense:\n    pass\n")
    env2 = _distribution(site, "oldattack", "[bench.attackers]\nold = oldattack:Old\n")
    (site / "oldattack.py").write_text("import a_module_nobody_installed\n")
    env = {**env, **env2, **ONE_THREAD}

    listed = cli("list", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    (shiny,) = [line for line in listed.stdout.splitlines() if line.startswith("  shiny ")]
    assert "[broken]" in shiny and "shinydefense" in shiny and "SyntaxError" in shiny
    (old,) = [line for line in listed.stdout.splitlines() if line.startswith("  old ")]
    assert "[broken]" in old and "oldattack" in old and "a_module_nobody_installed" in old
    assert "  vfc releases image" in listed.stdout and "  inversion [" in listed.stdout  # the others still work

    named = cli(*SMOKE, "--defense", "shiny", "--attacker", "adaptive", "--results-dir", tmp_path / "r", env_extra=env)
    assert named.returncode == 2
    (line,) = named.stderr.strip().splitlines()
    assert line.startswith("error: defense 'shiny' (distribution shinydefense") and "SyntaxError" in line, line

    # `all` skips it with one warning line and plans the rest (a huge seed range then stops the command
    # before any work, so this checks the planning without running every attacker).
    everything = cli(*SMOKE, "--attacker", "all", "--seeds", "0-5000", "--results-dir", tmp_path / "r", env_extra=env)
    assert everything.returncode == 2
    lines = everything.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("warning: skipping attacker 'old' (distribution oldattack")
    assert "ModuleNotFoundError" in lines[0] and lines[1].startswith("error: --seeds '0-5000'"), lines
    assert not (tmp_path / "r").exists()


# --- units ----------------------------------------------------------------------------------------

def test_hyperparameter_without_default_is_a_bench_error():
    class Plugin:
        def __init__(self, k, j: int = 1):
            pass

    with pytest.raises(BenchError, match=r"Plugin.__init__ hyperparameter 'k' has no default"):
        hparams_of(Plugin)


def test_seed_range_is_refused_before_it_is_expanded():
    from bench.planning import parse_seeds

    start = time.perf_counter()
    with pytest.raises(BenchError, match="at most 1000"):
        parse_seeds("0-99999999")
    assert time.perf_counter() - start < 0.5
    assert parse_seeds("0-2,1,7") == [0, 1, 2, 7]
