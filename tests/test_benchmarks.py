"""The benchmark scripts run end to end at tiny sizes and print a finite, positive ratio.

Their numbers are not checked: speed is measured by running the scripts on an idle machine
(DESIGN section 7), never by timed unit tests.
"""
import math
import re
import subprocess
import sys

import pytest

from conftest import REPO

TINY = {
    "training_loop": ["--dataset", "synthetic", "--n-images", "256", "--steps", "4", "--batch-size", "64",
                      "--threads", "1", "--matmul-size", "256"],
    "parallel": ["--dataset", "synthetic", "--max-images", "600", "--seeds", "2", "--epochs", "1",
                 "--batch-size", "64"],
    "end_to_end": ["--dataset", "synthetic", "--max-images", "600", "--seeds", "1", "--epochs", "1",
                   "--batch-size", "64", "--jobs", "1"],
    "shared_machine": ["--dataset", "synthetic", "--max-images", "400", "--epochs", "1", "--batch-size", "64",
                       "--policy", "shared,static", "--repeat", "1"],
}


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"bench.benchmarks.{name}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(TINY))
def test_help(name):
    result = run_benchmark(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "--dataset" in result.stdout


@pytest.mark.parametrize("name", sorted(TINY))
def test_prints_a_finite_positive_ratio(name):
    result = run_benchmark(name, *TINY[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("machine: "), result.stdout
    match = re.search(r"^speed-up:\s+(\S+) x\b", result.stdout, re.MULTILINE)
    assert match, result.stdout
    ratio = float(match.group(1))
    assert math.isfinite(ratio) and ratio > 0, result.stdout
    if name == "training_loop":
        share = re.search(r"= (\S+)% of peak$", result.stdout, re.MULTILINE)
        assert share and float(share.group(1)) > 0, result.stdout

    if name == "end_to_end":
        # Rerun on the warm cache: every designated model, fit and release comes from the cache.
        warm = re.search(r"^harness again, warm cache:.*defense fits\s+(\d+), release calls\s+(\d+)",
                         result.stdout, re.MULTILINE)
        assert warm and warm.groups() == ("0", "0"), result.stdout
        bound = re.search(r"^bound for any cold harness:\s+(\S+) x", result.stdout, re.MULTILINE)
        assert bound and math.isfinite(float(bound.group(1))) and float(bound.group(1)) > 0, result.stdout


def test_fmd_release_prints_images_per_second_speed_ups_and_peak_share():
    result = run_benchmark("fmd_release", "--images", "3", "--steps", "2", "--repeats", "1", "--threads", "1",
                           "--matmul-size", "256")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("machine: "), result.stdout
    for dataset in ("fashion-mnist", "cifar10"):
        match = re.search(rf"^{dataset}: FMD release speed-up (\S+)x \(old (\S+) img/s, new (\S+) img/s\)$",
                          result.stdout, re.MULTILINE)
        assert match, result.stdout
        ratio, old, new = map(float, match.groups())
        assert all(math.isfinite(v) and v > 0 for v in (ratio, old, new)), result.stdout
        for which in ("old", "new"):
            share = re.search(rf"^{dataset}: {which} release +(\S+) img/s .* = (\S+)% of peak$", result.stdout,
                              re.MULTILINE)
            assert share and float(share.group(1)) > 0 and float(share.group(2)) > 0, result.stdout
