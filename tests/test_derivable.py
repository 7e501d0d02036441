"""Derivable private tasks: measured on the owner's labels, recorded with every run
of a private task, and kept out of the worst case."""
import json
from pathlib import Path

import pytest

from bench import metrics as M
from bench.pipeline import load_dataset
from bench.results.records import load_runs
from bench.results.tables import long_table

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def test_a_run_of_a_derivable_task_is_flagged_in_its_record_and_the_leaderboard(main_inprocess, tmp_path):
    # The generated dataset's `parity` is class mod 2: derivable. Its `class` attacker is not.
    res = tmp_path / "r"
    out = main_inprocess("run", "--dataset", "synthetic", "--preset", "smoke", "--attacker", "adaptive,attribute",
                         "--no-plots", "--results-dir", res)
    assert out.returncode == 0, out.stdout + out.stderr
    records = {r["spec"]["attacker"]: r for r in (json.loads(p.read_text()) for p in (res / "runs").glob("*.json"))}
    assert records["attribute"]["metrics"]["derivability"] == 1.0 and records["attribute"]["flags"]["derivable"]
    assert "derivability" not in records["adaptive"]["metrics"] and "derivable" not in records["adaptive"]["flags"]
    long = long_table(load_runs(res))
    assert set(long[long.derivable].attacker) == {"attribute"}  # the leaderboard carries the flag
    # (that a derivable row never decides a worst case: tests/test_units.py)


@pytest.mark.skipif(not FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_mnist_group_is_derivable_from_its_class():
    # What `bench list` and the README say of Fashion-MNIST's only private task.
    data = load_dataset("fashion-mnist", (), None)
    assert M.derivability(data.labels["class"][data.train_idx], data.labels["group"][data.train_idx]) == 1.0
