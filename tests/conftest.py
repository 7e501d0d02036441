import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own artifact/data cache: tests never read a developer's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    torch.set_num_threads(2)
    return cache


@pytest.fixture
def fp32(monkeypatch):
    """Run the test at fp32 (for comparisons of float rounding that bf16 would swamp)."""
    from bench import precision

    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    monkeypatch.setattr(precision, "_requested", None)


def run_cli(*args, cwd=None, env_extra=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` in a subprocess, with this test's cache."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def main_inprocess(capsys):
    """`bench.cli.main(ARGS)` in this process (fast, for checks that need no fresh interpreter)."""
    from types import SimpleNamespace

    from bench.cli import main

    def call(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's own exits
            code = e.code
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return call
