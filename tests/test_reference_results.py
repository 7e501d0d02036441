"""The committed reference results in results/ are what their run records say, and reproducible.

- Each committed leaderboard is exactly what `bench leaderboard` regenerates from the
  committed per-run JSON files (a result edited by hand, or runs committed without
  regenerating the tables, fails here).
- `slow`: a fresh run of the smallest cell, with an empty artifact cache so every model
  is trained again, agrees with the committed leaderboard within the 95 % CIs.
"""
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO

TABLES = ("leaderboard.csv", "leaderboard_agg.csv", "leaderboard_worst.csv", "leaderboard_label_cost.csv",
          "leaderboard_headline.csv")
RESULT_DIRS = [d for d in (REPO / "results" / "reference", REPO / "results" / "reference" / "tuning") if (d / "runs").is_dir()]


@pytest.mark.parametrize("committed", RESULT_DIRS, ids=lambda d: str(d.relative_to(REPO)))
def test_committed_leaderboards_regenerate_identically(committed, tmp_path, main_inprocess):
    shutil.copytree(committed / "runs", tmp_path / "runs")
    out = main_inprocess("leaderboard", "--results-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    for table in TABLES:
        assert (tmp_path / table).read_bytes() == (committed / table).read_bytes(), \
            f"{committed / table} differs from what its runs/ regenerate: run `python -m bench leaderboard`"


@pytest.mark.slow
def test_fresh_run_of_the_smallest_cell_agrees_with_the_committed_leaderboard(cli, tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    fresh = tmp_path / "fresh"
    # The smallest reference cell: no defense, one attacker, the default dataset, three seeds.
    run = cli("run", "--defense", "identity", "--attacker", "adaptive", "--seeds", "0-2",
              "--results-dir", fresh, "--no-plots", timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr
    out = cli("compare", REPO / "results" / "reference" / "leaderboard.csv", fresh / "leaderboard.csv")
    assert out.returncode == 0, out.stderr
    assert "identity" in out.stdout and "adaptive" in out.stdout, out.stdout
    n_sig, n_total = map(int, re.search(r"^(\d+) of (\d+) differences exceed", out.stdout, re.MULTILINE).groups())
    assert n_total > 0 and n_sig == 0, out.stdout
