"""Faults: a sweep killed with SIGKILL resumes without losing or repeating runs, concurrent
sweeps share a results dir, NaN output and hanging plugins become `failed` records, and
nothing is ever unpickled from the cache or the results."""
import ast
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import joblib
import pandas as pd
import pytest
import torch

from bench.errors import BenchError
from bench.results.leaderboards import write_leaderboards
from bench.runner import Env, execute
from conftest import REPO

SMOKE = ["run", "--dataset", "synthetic", "--preset", "smoke", "--no-plots"]
# Concurrent processes on few cores: one torch thread each, or they slow each other down many times over.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _start(args, log) -> subprocess.Popen:
    """`python -m bench ARGS` in its own process group (so that a kill reaches any worker it started)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO,
                                env={**os.environ, **ONE_THREAD}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the sweep ended before the point where it was to be killed"
        assert time.monotonic() < deadline, "the sweep never reached the point where it was to be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _finished(runs_dir) -> dict:
    """Every run file: its bytes and modification time. Each must be a complete record."""
    out = {}
    for path in runs_dir.glob("*.json"):
        data = path.read_bytes()
        assert json.loads(data)["status"] == "ok", path
        out[path.name] = (data, path.stat().st_mtime_ns)
    return out


def _sidecar_matches(path) -> bool:
    sidecar = path.with_name(path.name + ".sha256")
    return sidecar.exists() and sidecar.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_sweep_resumes_without_losing_or_repeating_runs(tmp_path, isolated_cache):
    res, runs = tmp_path / "results", tmp_path / "results" / "runs"
    sweep = [*SMOKE, "--attacker", "adaptive,attribute", "--seeds", "0-1", "--jobs", "1", "--results-dir", res]
    total = 4
    models = isolated_cache / "artifacts" / "model"

    # Killed while building the shared artifacts (holding their file lock), then after the first run,
    # then after a few more.
    _kill_when(_start(sweep, tmp_path / "1.log"), lambda: any(models.glob("*.pt")))
    assert not list(runs.glob("*.json"))  # runs start only once every shared artifact is built
    _kill_when(_start(sweep, tmp_path / "2.log"), lambda: len(list(runs.glob("*.json"))) >= 1)
    done = _finished(runs)
    assert 1 <= len(done) < total - 1

    # What a kill leaves behind at the worst moment: a run file's temp copy cut short, and an artifact
    # renamed into place before its checksum (seed 1's designated model, needed again below).
    (runs / ".0123456789abcdef.json.k1ll3d.tmp").write_text('{"run_id": "0123456789abcdef", "sta')
    (seed1_model,) = [p.with_suffix(".pt") for p in models.glob("*.json") if json.loads(p.read_text())["seed"] == 1]
    seed1_model.with_name(seed1_model.name + ".sha256").unlink()

    third = _start(sweep, tmp_path / "3.log")
    _kill_when(third, lambda: len(list(runs.glob("*.json"))) >= min(len(done) + 2, total - 1))
    assert "checksum" in (tmp_path / "3.log").read_text()  # the torn model was rebuilt, not loaded
    later = _finished(runs)
    assert {k: later[k] for k in done} == done  # nothing finished was run again
    assert len(later) < total
    done = later

    last = subprocess.run([sys.executable, "-m", "bench", *map(str, sweep)], cwd=REPO, env={**os.environ, **ONE_THREAD},
                          capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stdout + last.stderr
    assert f"{total - len(done)} ok, {len(done)} already done" in last.stdout and "0 failed" in last.stdout
    final = _finished(runs)
    assert len(final) == total and {k: final[k] for k in done} == done

    # Every cached artifact is complete, and the leaderboard holds each run once, with its file's numbers.
    artifacts = list((isolated_cache / "artifacts").rglob("*.pt"))
    assert artifacts and all(_sidecar_matches(p) for p in artifacts)
    long = pd.read_csv(res / "leaderboard.csv")
    assert not long.duplicated(["run_id", "metric"]).any() and long.run_id.nunique() == total
    for name, (data, _) in final.items():
        record = json.loads(data)
        rows = long[long.run_id == record["run_id"]]
        assert dict(zip(rows.metric, rows.value)) == pytest.approx(record["metrics"], rel=1e-5)


def test_two_sweeps_share_one_results_dir(tmp_path):
    res = tmp_path / "results"
    # Overlapping run sets: both sweeps run identity x inversion, and both need the same designated model.
    procs = [_start([*SMOKE, "--attacker", attackers, "--set", "inversion.epochs=1", "--results-dir", res],
                    tmp_path / f"{i}.log")
             for i, attackers in enumerate(["adaptive,inversion", "inversion,attribute"])]
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=300) == 0, (tmp_path / f"{i}.log").read_text()
    records = [json.loads(p.read_text()) for p in (res / "runs").glob("*.json")]
    assert sorted(r["spec"]["attacker"] for r in records) == ["adaptive", "attribute", "inversion"]
    assert all(r["status"] == "ok" for r in records)
    assert not list((res / "runs").glob(".*.tmp"))
    long = write_leaderboards(res)["long"]
    assert not long.duplicated(["run_id", "metric"]).any() and long.run_id.nunique() == 3


def _records(results_dir) -> dict:
    records = (json.loads(p.read_text()) for p in (results_dir / "runs").glob("*.json"))
    return {r["spec"]["attacker"]: r for r in records}


def test_nan_output_is_a_failed_run(main_inprocess, tmp_path, monkeypatch):
    from attackers.inversion import Inversion

    monkeypatch.setattr(Inversion, "_fit", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(Inversion, "_predict", lambda self, rb: torch.full_like(rb, float("nan")))
    out = main_inprocess(*SMOKE, "--attacker", "inversion", "--results-dir", tmp_path / "r")
    assert out.returncode == 1, out.stdout + out.stderr
    record = _records(tmp_path / "r")["inversion"]
    assert record["status"] == "failed"
    assert record["reason"].startswith("ContractError: attacker inversion predicted non-finite values (NaN or inf)")
    assert "FAILED identity x inversion" in out.stdout and "non-finite" in out.stdout
    assert not (tmp_path / "r" / "samples").exists()  # no image grid of a run that has no numbers


def test_timeout_in_process(main_inprocess, tmp_path, monkeypatch):
    from attackers.adaptive import Adaptive

    fit = Adaptive._fit

    def hang(self, *args, **kwargs):  # `attribute` derives from Adaptive and must still finish
        if type(self) is Adaptive:
            time.sleep(30)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Adaptive, "_fit", hang)
    handler = signal.getsignal(signal.SIGALRM)
    out = main_inprocess(*SMOKE, "--attacker", "adaptive,attribute", "--timeout", "5", "--results-dir", tmp_path / "r")
    assert out.returncode == 1, out.stdout + out.stderr
    records = _records(tmp_path / "r")
    assert records["adaptive"]["status"] == "failed" and records["adaptive"]["reason"] == "timed out after 5 s"
    assert "in hang" in records["adaptive"]["traceback"]  # where it was stuck
    assert records["attribute"]["status"] == "ok"
    assert signal.getsignal(signal.SIGALRM) is handler and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


SLEEPER = '''
import time

from attackers.adaptive import Adaptive


class Sleeper(Adaptive):
    name = "sleeper"
    description = "an attacker whose fit never ends"

    def _fit(self, released_train, targets, *, context, seed):
        time.sleep(120)
'''


def test_timeout_in_loky_workers(cli, tmp_path):
    site = tmp_path / "site"
    info = site / "sleeper-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sleeper\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.attackers]\nsleeper = sleeper:Sleeper\n")
    (site / "sleeper.py").write_text(SLEEPER)
    env = {**ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = cli(*SMOKE, "--attacker", "sleeper,adaptive", "--jobs", "2", "--timeout", "6",
              "--results-dir", tmp_path / "r", env_extra=env, timeout=100)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED identity x sleeper on synthetic[class] seed 0: timed out after 6 s" in out.stdout
    records = _records(tmp_path / "r")
    assert records["sleeper"]["reason"] == "timed out after 6 s" and records["adaptive"]["status"] == "ok"


REFUSALS = {"no SIGALRM": "needs SIGALRM", "not the main thread": "main thread",
            "thread-based backend": "ThreadingBackend"}


@pytest.mark.parametrize("where", REFUSALS)
def test_timeout_refused_where_it_cannot_interrupt(tmp_path, monkeypatch, where):
    env = Env(results_dir=tmp_path / "r", jobs=2, timeout=5)
    errors = []

    def start():
        try:
            execute([], env)
        except BenchError as e:
            errors.append(str(e))

    if where == "no SIGALRM":  # as on Windows
        monkeypatch.delattr(signal, "setitimer")
        start()
    elif where == "not the main thread":
        thread = threading.Thread(target=start)
        thread.start()
        thread.join()
    else:
        with joblib.parallel_config(backend="threading"):
            start()
    assert len(errors) == 1 and REFUSALS[where] in errors[0], errors
    assert not (tmp_path / "r").exists()


def unsafe_loads(source: str) -> list[tuple[int, str]]:
    """(line, what) of everything that could unpickle: torch.load without weights_only=True,
    np.load without allow_pickle=False, and pickle itself."""
    required = {"torch": ("weights_only", True), "np": ("allow_pickle", False), "numpy": ("allow_pickle", False)}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in required:
            key, value = required[node.func.value.id]
            if not any(k.arg == key and isinstance(k.value, ast.Constant) and k.value.value is value
                       for k in node.keywords):
                found.append((node.lineno, f"{node.func.value.id}.load"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy") \
                and "load" in [a.name for a in node.names]:
            found.append((node.lineno, f"{node.module}.load"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if any(m in ("pickle", "dill", "cloudpickle") for m in modules):
                found.append((node.lineno, "pickle"))
    return sorted(found)


def test_the_unpickling_check_catches_what_it_should():
    source = textwrap.dedent('''
        torch.load(f)
        torch.load(f, weights_only=True)
        np.load(p)
        np.load(p, allow_pickle=False)
        torch.load(f, weights_only=False)
        import pickle
        from torch import load
    ''')
    assert unsafe_loads(source) == [(2, "torch.load"), (4, "np.load"), (6, "torch.load"), (7, "pickle"),
                                    (8, "torch.load")]


# CIFAR's distribution format is itself a pickle: only bench/data/safe_pickle.py reads it (with an
# unpickler that admits plain data and numpy arrays, nothing callable), and the tests that write
# such files import pickle to write them. Nothing the harness writes, in the cache or the results, is one.
SOURCE_FORMAT_PICKLES = {"bench/data/safe_pickle.py", "tests/test_datasets.py", "tests/cases_untrusted.py"}


def test_nothing_is_ever_unpickled():
    sources = [p for top in ("bench", "defenses", "attackers", "tests") for p in (REPO / top).rglob("*.py")]
    assert len(sources) > 20
    found = {}
    for path in sources:
        name = path.relative_to(REPO).as_posix()
        bad = [(line, what) for line, what in unsafe_loads(path.read_text())
               if not (what == "pickle" and name in SOURCE_FORMAT_PICKLES)]
        if bad:
            found[name] = bad
    assert not found, f"torch.load needs weights_only=True, np.load allow_pickle=False, and no pickle: {found}"


def test_a_run_another_sweep_finished_since_planning_is_not_run_again(tmp_path, monkeypatch):
    # Two sweeps share a results dir; the todo list of one is made at its start.
    import bench.runner as runner
    from bench.cli import build_parser
    from bench.planning import plan_specs
    from bench.results.records import write_run

    spec = plan_specs(build_parser().parse_args([*SMOKE, "--attacker", "adaptive", "--seeds", "0"]))[0]
    record = {"run_id": spec.run_id, "status": "ok", "spec": spec.to_dict(), "metrics": {"utility_acc": 0.5},
              "data_digest": runner.data_digest(spec, None)}
    write_run(tmp_path, record)
    monkeypatch.setattr(runner, "run_attack", lambda *a, **k: pytest.fail("the finished run was run again"))
    status, _, _ = runner._run_one(spec, runner.Env(results_dir=tmp_path))
    assert status == "skipped"
    assert json.loads((tmp_path / "runs" / f"{spec.run_id}.json").read_text()) == record
