"""bench.cores: torch threads shared among the jobs of every harness command on the machine.

Fake commands are real processes (`sleep`), so that the liveness check sees them; the registry
is a fresh directory per test and the machine has two CPUs (monkeypatched).
"""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from bench import cores
from bench.errors import BenchError
from conftest import REPO

TWO_CPUS = frozenset({0, 1})


@pytest.fixture
def registry(tmp_path, monkeypatch):
    path = tmp_path / "cores"
    monkeypatch.setenv("BENCH_CORES_DIR", str(path))
    for name in ("OMP_NUM_THREADS", "BENCH_THREAD_POLICY", "BENCH_CORES_TRACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cores, "usable_cpus", lambda: TWO_CPUS)
    monkeypatch.setattr(cores, "_state", None)
    monkeypatch.setattr(cores, "_own_entries", set())
    before = torch.get_num_threads()
    yield path
    torch.set_num_threads(before)


@pytest.fixture
def other_command():
    """Start fake harness commands (sleeping processes); they are ended after the test."""
    procs = []

    def start(jobs: int = 1, threads: int | None = None) -> int:
        proc = subprocess.Popen(["sleep", "60"])
        procs.append(proc)
        cores.register(proc.pid, jobs, threads)
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_alone_a_command_takes_cores_per_job(registry):
    me = os.getpid()
    assert cores.share(1, me) == 2
    assert cores.share(2, me) == 1
    assert cores.share(3, me, cpus=frozenset(range(8))) == 2
    assert cores.share(4, me, cpus=frozenset(range(2))) == 1  # never 0


def test_two_commands_take_half_each(registry, other_command):
    other_command(jobs=1)
    assert cores.share(1, os.getpid()) == 1
    assert cores.share(1, os.getpid(), cpus=frozenset(range(8))) == 4
    # A sweep of 2 jobs and a command of 1 on 8 cores: 8 // 3 each.
    other_command(jobs=1)
    assert cores.share(1, os.getpid(), cpus=frozenset(range(8))) == 2


def test_a_command_with_fixed_threads_takes_them_off_the_free_cores(registry, other_command):
    other_command(jobs=2, threads=1)    # a sweep run with OMP_NUM_THREADS=1 --jobs 2
    assert cores.share(1, os.getpid()) == 1
    assert cores.share(1, os.getpid(), cpus=frozenset(range(8))) == 6


def test_commands_on_other_cpus_do_not_count(registry, other_command):
    pid = other_command(jobs=1)
    entry = json.loads((registry / str(pid)).read_text())
    (registry / str(pid)).write_text(json.dumps({**entry, "cpus": [4, 5]}))
    assert cores.share(1, os.getpid()) == 2


def test_ended_commands_are_ignored_and_removed(registry, other_command):
    live = other_command(jobs=1)
    dead = dead_pid()
    cores.register(dead, 4)
    (registry / str(live + 1000000)).write_text("not json")
    # A live pid whose process started at another time: the pid was reused by something else.
    (registry / str(os.getppid())).write_text(json.dumps({"pid": os.getppid(), "started": "0", "jobs": 8,
                                                            "threads": None, "cpus": [0, 1]}))
    assert set(cores.live_commands()) == {live}
    # Well-formed entries of ended (or reused) pids go; a file the registry never wrote stays.
    assert sorted(p.name for p in registry.iterdir()) == sorted([str(live), str(live + 1000000)])
    assert cores.share(1, os.getpid()) == 1


def test_a_zombie_does_not_count(registry):
    import time

    proc = subprocess.Popen(["true"])  # not reaped until wait(): a zombie once it exits
    try:
        while cores._proc_stat(proc.pid)[0] != "Z":
            time.sleep(0.01)
        cores.register(proc.pid, 1)
        assert cores.live_commands() == {}
    finally:
        proc.wait()


def test_a_killed_command_leaves_an_entry_that_does_not_count(registry):
    code = ("from bench import cores; cores.setup(1); print(cores.command_pid(), flush=True); "
            "import time; time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": ""})
    try:
        pid = int(proc.stdout.readline())
        assert pid == proc.pid and (registry / str(pid)).exists()
        assert set(cores.live_commands()) == {pid}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (registry / str(pid)).exists()   # nothing could remove it
    assert cores.live_commands() == {}
    assert not (registry / str(pid)).exists()


def test_a_command_removes_its_entry_when_it_exits(registry):
    code = "from bench import cores; cores.setup(1); print(cores.command_pid())"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": ""}, timeout=120)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout)
    assert not (registry / str(pid)).exists()


def test_registered_scopes_the_entry_to_the_block(registry):
    with pytest.raises(RuntimeError):
        with cores.registered(3):
            assert cores.live_commands()[os.getpid()]["jobs"] == 3
            assert cores.setup(3) == 1 and cores._state is not None   # a job run in-process
            raise RuntimeError("boom")
    assert cores.live_commands() == {}
    assert cores._state is None    # it no longer rebalances: the sweep is over


def test_setup_registers_and_takes_the_share(registry, other_command):
    assert cores.setup(1) == 2 and torch.get_num_threads() == 2
    assert cores.live_commands()[os.getpid()]["jobs"] == 1
    other_command(jobs=1)
    assert cores.setup(2) == 1 and torch.get_num_threads() == 1   # 2 cores, 3 jobs in all: at least 1
    assert cores.live_commands()[os.getpid()]["jobs"] == 2


def test_omp_num_threads_wins(registry, monkeypatch, other_command):
    other_command(jobs=4)
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cores.setup(1) is None
    assert torch.get_num_threads() == 2    # left as the user set it, however many commands run
    assert cores.live_commands()[os.getpid()]["threads"] == 2   # and counted by the others
    assert cores.rebalance(now=1e12) is None


def test_static_policy_is_cores_per_job_with_no_registry(registry, monkeypatch, other_command):
    other_command(jobs=4)
    monkeypatch.setenv("BENCH_THREAD_POLICY", "static")
    assert cores.setup(1) == 2 and torch.get_num_threads() == 2
    assert cores.setup(2) == 1
    assert os.getpid() not in cores.live_commands()
    assert cores.rebalance(now=1e12) is None


def test_unknown_policy_is_an_error(registry, monkeypatch):
    monkeypatch.setenv("BENCH_THREAD_POLICY", "statik")
    with pytest.raises(BenchError, match="statik"):
        cores.setup(1)


def test_rebalance_is_throttled_and_follows_other_commands(registry, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(cores.time, "monotonic", lambda: clock[0])
    assert cores.setup(1) == 2
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        cores.register(sleeper.pid, 1)      # a second command starts
        clock[0] += cores.REBALANCE_S / 2
        assert cores.rebalance() is None and torch.get_num_threads() == 2   # too soon: not even looked
        clock[0] += cores.REBALANCE_S / 2
        assert cores.rebalance() == 1 and torch.get_num_threads() == 1
        clock[0] += cores.REBALANCE_S
        assert cores.rebalance() == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    clock[0] += cores.REBALANCE_S         # it ended: this one grows back
    assert cores.rebalance() == 2 and torch.get_num_threads() == 2


def test_rebalance_applies_set_num_threads_only_on_a_change(registry, monkeypatch, other_command):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    assert cores.setup(1) == 2
    calls.clear()
    assert cores.rebalance(now=1e12) == 2 and calls == []
    other_command(jobs=1)
    assert cores.rebalance(now=2e12) == 1 and calls == [1]


def test_rebalance_leaves_a_count_someone_else_set(registry):
    assert cores.setup(1) == 2
    torch.set_num_threads(1)     # e.g. a test pinning one thread for bit-identical numbers
    assert cores.rebalance(now=1e12) is None and torch.get_num_threads() == 1
    assert cores._state is None  # for good, until the next job's setup


def test_rebalance_does_nothing_outside_a_job(registry):
    assert cores._state is None
    assert cores.rebalance(now=1e12) is None


def test_an_entry_removed_by_someone_else_comes_back(registry):
    assert cores.setup(1) == 2
    (registry / str(os.getpid())).unlink()
    assert cores.rebalance(now=1e12) == 2
    assert os.getpid() in cores.live_commands()


def _worker_registration(registry: str) -> tuple[int, int, dict]:
    """In a loky worker: a job's setup. The worker's environment is put back after (workers are reused)."""
    from bench import cores as c

    saved = {k: os.environ.get(k) for k in ("BENCH_CORES_DIR", "OMP_NUM_THREADS")}
    threads = torch.get_num_threads()
    os.environ["BENCH_CORES_DIR"] = registry
    os.environ.pop("OMP_NUM_THREADS", None)
    try:
        return c.command_pid(), c.setup(2), c.live_commands()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        c._state = None
        torch.set_num_threads(threads)


def test_a_loky_worker_registers_its_command(registry):
    from joblib import Parallel, delayed

    [(command, threads, live)] = Parallel(n_jobs=2)(delayed(_worker_registration)(str(registry)) for _ in range(1))
    assert command == os.getpid()
    assert set(live) == {os.getpid()} and live[os.getpid()]["jobs"] == 2
    assert threads == max(1, len(os.sched_getaffinity(0)) // 2)


def test_a_worker_tells_its_users_omp_num_threads_from_joblibs(registry, monkeypatch):
    class Parent:
        pid = os.getppid()

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cores.explicit_threads() == 1                     # the command's own process: the user's
    monkeypatch.setattr(cores.multiprocessing, "parent_process", lambda: Parent())
    monkeypatch.setenv(cores.USER_OMP_MARK, "0")
    assert cores.explicit_threads() is None                  # a worker's, set by joblib
    monkeypatch.setenv(cores.USER_OMP_MARK, "1")
    assert cores.explicit_threads() == 1                     # passed on from the user by joblib


@pytest.mark.parametrize("omp, threads", [("", None), ("1", 1)])
def test_loky_workers_of_a_command_share_unless_the_user_set_threads(registry, tmp_path, omp, threads):
    trace = tmp_path / "trace"
    env = {**os.environ, "OMP_NUM_THREADS": omp, "BENCH_CORES_TRACE": str(trace)}
    env.pop(cores.USER_OMP_MARK, None)
    result = subprocess.run([sys.executable, "-m", "bench", "run", "--dataset", "synthetic", "--preset", "smoke",
                             "--seeds", "0,1", "--attacker", "adaptive", "--jobs", "2", "--no-plots",
                             "--results-dir", str(tmp_path / "r")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    # Its two preparations and two runs went to loky workers, which registered the command, their parent.
    [entry] = [json.loads(p.read_text()) for p in registry.iterdir()]
    assert entry["jobs"] == 2 and entry["threads"] == threads
    workers = {line.split()[0] for line in trace.read_text().splitlines()} if trace.exists() else set()
    if threads is None:
        assert workers and str(entry["pid"]) not in workers   # each took a share (and traced it)
    else:
        assert not workers                                     # none touched the user's count


def test_worker_setup_takes_the_share(registry, other_command, tmp_path):
    from bench.runner import Env, _worker_setup

    other_command(jobs=1)
    _worker_setup(Env(results_dir=tmp_path, device="cpu", jobs=1))
    assert torch.get_num_threads() == 1
    assert cores.live_commands()[os.getpid()]["jobs"] == 1


def test_the_training_loop_rebalances_after_every_batch(monkeypatch):
    from bench.training import TrainConfig, train

    calls = []
    monkeypatch.setattr(cores, "rebalance", lambda: calls.append(1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, y = torch.rand(10, 4), torch.randint(0, 2, (10,))
    train(model, lambda m, xb, yb: torch.nn.functional.cross_entropy(m(xb), yb), x, y,
          config=TrainConfig(epochs=2, batch_size=4, augment=False), device=torch.device("cpu"), seed=0)
    assert len(calls) == 2 * 3


@pytest.mark.parametrize("env, expected", [
    ({}, cores.SPIN_COUNT),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    ({"GOMP_SPINCOUNT": "5"}, "5"),
    ({"BENCH_THREAD_POLICY": "static"}, None),
])
def test_the_cli_shortens_openmp_spinning_before_torch_loads(env, expected, tmp_path):
    # A command that stops before loading torch: main set the value by then (libgomp reads it when torch loads).
    code = (f"import os, sys; from bench.cli import main; main(['leaderboard', '--results-dir', {str(tmp_path)!r}]); "
            "print('torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'), file=sys.stderr)")
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                              "BENCH_THREAD_POLICY")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**base, "OMP_NUM_THREADS": "1", **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.split()[-2:] == ["False", str(expected)]


def test_openmp_defaults_leave_a_process_whose_torch_is_loaded(monkeypatch):
    environ = {}
    cores.openmp_defaults(environ)   # torch is loaded here: libgomp would never read it
    assert "GOMP_SPINCOUNT" not in environ


def _mark_busy(registry, command: int, worker: int) -> None:
    (registry / f"{command}{cores.BUSY}{worker}").write_text(cores.start_time(worker) or "")


def test_a_command_counts_only_its_running_jobs(registry, other_command):
    me = os.getpid()
    cores.register(me, 2)
    assert cores.share(2, me) == 1                      # no job marked: all jobs count, as before
    with cores.busy():
        assert cores.live_commands()[me]["busy"] == 1
        assert cores.share(2, me) == 2                  # its sibling finished: the lone job takes both cores
        other = other_command(jobs=2)
        assert cores.share(2, me) == 1                  # beside another command's 2 unmarked jobs: 2 // 3
        _mark_busy(registry, other, other)
        assert cores.share(2, me) == 1                  # one running job each
    assert not (registry / f"{me}{cores.BUSY}{me}").exists()   # the mark goes with the job
    assert cores.share(2, me) == 1 and cores.live_commands()[me]["busy"] == 0


def test_a_mark_of_an_ended_job_does_not_count_and_is_removed(registry):
    me = os.getpid()
    cores.register(me, 2)
    _mark_busy(registry, me, os.getpid())
    dead = dead_pid()
    (registry / f"{me}{cores.BUSY}{dead}").write_text("")
    (registry / f"{me}{cores.BUSY}garbage").write_text("")
    assert cores.live_commands()[me]["busy"] == 1
    # The ended job's mark goes; `garbage` is no mark the registry writes: left alone.
    assert sorted(p.name for p in registry.iterdir()) == sorted([str(me), f"{me}{cores.BUSY}{me}",
                                                                 f"{me}{cores.BUSY}garbage"])


@pytest.mark.parametrize("make", ["not json", "directory", "huge jobs", "other keys", "binary"])
def test_what_the_registry_did_not_write_is_ignored_not_removed(registry, capsys, make):
    me = os.getpid()
    cores.register(me, 1)
    foreign = registry / "4242"
    mark = registry / f"{me}{cores.BUSY}4242"
    if make == "directory":
        foreign.mkdir()
        mark.mkdir()
    else:
        content = {"not json": "oops", "huge jobs": '{"pid": 4242, "started": null, "jobs": 1e400, "threads": null, '
                   '"cpus": [0]}', "other keys": '{"pid": 4242, "mine": true}', "binary": "\udcff"}[make]
        foreign.write_bytes(content.encode("utf-8", "surrogateescape"))
        mark.write_bytes(b"\xff\xfe" if make == "binary" else b"not a start time")
    assert set(cores.live_commands()) == {me}
    assert cores.share(1, me) == 2
    assert foreign.exists() and mark.exists()
    err = capsys.readouterr().err
    assert f"ignoring {foreign}" in err and "Traceback" not in err


def test_a_registry_that_cannot_be_used_says_so_once(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    monkeypatch.setenv("BENCH_CORES_DIR", str(blocker))
    monkeypatch.setattr(cores, "_warned", set())
    assert cores.registry_dir() is None and cores.registry_dir() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0] and "BENCH_CORES_DIR" in err[0], err


def test_the_static_policy_marks_nothing(registry, monkeypatch):
    monkeypatch.setenv("BENCH_THREAD_POLICY", "static")
    with cores.busy():
        assert not registry.exists() or not list(registry.iterdir())


def test_runs_and_preparations_are_marked_busy_while_they_run(registry, tmp_path, monkeypatch):
    from bench import runner

    seen = []
    monkeypatch.setattr(runner, "_prepare_here", lambda *a: seen.append(cores.live_commands()[os.getpid()]["busy"]))
    monkeypatch.setattr(runner, "_run_one", lambda *a: (seen.append(cores.live_commands()[os.getpid()]["busy"]),
                                                        "ok", "x", None)[1:])
    cores.register(os.getpid(), 2)
    env = runner.Env(results_dir=tmp_path, device="cpu", jobs=2)
    runner._prepare(None, env, (), None)
    spec = type("Spec", (), {"label": lambda self: "a run"})()
    runner._run_timed(spec, env, None, "d")
    assert seen == [1, 1] and cores.live_commands()[os.getpid()]["busy"] == 0
