"""The benchmark scripts run end to end at tiny sizes and print a finite, positive ratio.

Their numbers are not checked: speed is measured by running the scripts on an idle machine
(DESIGN section 7), never by timed unit tests.
"""
import json
import math
import re
import subprocess
import sys

import pytest

from conftest import REPO

TINY = {
    "training_loop": ["--dataset", "synthetic", "--n-images", "256", "--steps", "4", "--batch-size", "64",
                      "--threads", "1", "--matmul-size", "256", "--no-compile", "--curve-images", "128"],
    "parallel": ["--dataset", "synthetic", "--max-images", "300", "--seeds", "2", "--epochs", "1",
                 "--batch-size", "64"],
    "end_to_end": ["--dataset", "synthetic", "--max-images", "300", "--seeds", "1", "--epochs", "1",
                   "--batch-size", "64", "--jobs", "1"],
    # Two policies: the speed-up line compares them.
    "shared_machine": ["--dataset", "synthetic", "--max-images", "200", "--epochs", "1", "--batch-size", "64",
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


def _assert_ratio(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("machine: "), result.stdout
    match = re.search(r"^speed-up:\s+(\S+) x\b", result.stdout, re.MULTILINE)
    assert match, result.stdout
    ratio = float(match.group(1))
    assert math.isfinite(ratio) and ratio > 0, result.stdout


# training_loop's run is checked, with its ratio, in test_training_loop_reports_variants_and_early_stopping.
@pytest.mark.parametrize("name", sorted(set(TINY) - {"training_loop"}))
def test_prints_a_finite_positive_ratio(name):
    result = run_benchmark(name, *TINY[name])
    _assert_ratio(result)
    if name == "end_to_end":
        # Rerun on the warm cache: every designated model, fit and release comes from the cache.
        warm = re.search(r"^harness again, warm cache:.*defense fits\s+(\d+), release calls\s+(\d+)",
                         result.stdout, re.MULTILINE)
        assert warm and warm.groups() == ("0", "0"), result.stdout
        bound = re.search(r"^bound for any cold harness:\s+(\S+) x", result.stdout, re.MULTILINE)
        assert bound and math.isfinite(float(bound.group(1))) and float(bound.group(1)) > 0, result.stdout


def _short_training(variant: str, seed: int = 0):
    """48 steps of the shared loop on fixed synthetic data with one of the benchmark's loop variants:
    (loss, accuracy) on 256 held-out images. Seed-to-seed, these move by about 0.15 and 0.06."""
    import torch
    import torch.nn.functional as F

    from bench.benchmarks.training_loop import train_variant
    from bench.models import build_classifier
    from bench.training import TrainConfig

    g = torch.Generator().manual_seed(0)
    y = torch.arange(512) % 4
    x = (torch.rand(4, 1, 16, 16, generator=g)[y] + 0.3 * torch.randn(512, 1, 16, 16, generator=g)).clamp(0, 1)
    torch.manual_seed(seed)
    model = train_variant(variant, build_classifier("cnn", (1, 16, 16), 4), x[:256], y[:256],
                          config=TrainConfig(epochs=6, batch_size=32, lr=5e-3, augment=True),
                          device=torch.device("cpu"), seed=seed)
    with torch.no_grad():
        logits = model(x[256:])
    return F.cross_entropy(logits, y[256:]).item(), (logits.argmax(1) == y[256:]).float().mean().item()


def test_channels_last_keeps_the_numbers():
    """The benchmark's channels_last variant trains to the same loss and accuracy as today's loop: on CPU
    the same arithmetic in another memory order, equal up to float rounding (measured: 0.1462 vs 0.1461
    and one image of 256), far inside seed noise."""
    loss, acc = _short_training("today")
    loss_cl, acc_cl = _short_training("channels_last")
    assert loss_cl == pytest.approx(loss, rel=0.02), (loss, loss_cl)
    assert acc_cl == pytest.approx(acc, abs=0.02), (acc, acc_cl)


def test_bf16_keeps_the_numbers_within_seed_noise():
    """bf16 autocast rounds every convolution's inputs to 8 bits of mantissa: another sample of the same
    training, which must land within seed noise of the fp32 loop (seed to seed: 0.15 in loss, 0.06 in
    accuracy)."""
    loss, acc = _short_training("today")
    loss_b, acc_b = _short_training("bf16")
    assert loss_b == pytest.approx(loss, abs=0.15), (loss, loss_b)
    assert acc_b == pytest.approx(acc, abs=0.06), (acc, acc_b)


@pytest.mark.slow
def test_compile_keeps_the_numbers_within_seed_noise():
    """torch.compile changes float rounding and draws dropout masks from inductor's own RNG: the run
    is another sample of the same training, so it must land within seed noise (measured: loss 0.154
    vs 0.146, accuracy 0.957 vs 0.973; seed 1 gives 0.303 and 0.914). Slow: a cold inductor compile."""
    loss, acc = _short_training("today")
    loss_c, acc_c = _short_training("compile")
    assert loss_c == pytest.approx(loss, rel=0.3), (loss, loss_c)
    assert acc_c == pytest.approx(acc, abs=0.05), (acc, acc_c)


def test_training_loop_reports_variants_and_early_stopping():
    result = run_benchmark("training_loop", *TINY["training_loop"])
    _assert_ratio(result)
    out = result.stdout
    share = re.search(r"= (\S+)% of the fp32 peak, (\S+)% of the bf16 peak$", out, re.MULTILINE)
    assert share and float(share.group(1)) > 0 and float(share.group(2)) > 0, out
    for line in ("shared harness loop:", "channels_last loop:", "bf16 loop:", "torch.compile loop:",
                 "best vs today's loop:", "fp32 matmul peak:", "bf16 matmul peak:"):
        assert re.search(rf"^{re.escape(line)}", out, re.MULTILINE), out
    assert re.search(r"^channels_last loop:\s+\d+ images/s .*ratio (\S+) x vs today", out, re.MULTILINE), out
    assert re.search(r"^channels_last achieves:.*= \S+% of the fp32 peak", out, re.MULTILINE), out
    assert re.search(r"^bf16 achieves:.*= \S+% of the bf16 peak, \S+% of the fp32 peak$", out, re.MULTILINE), out
    curve = re.search(r"^  cnn: val accuracy by epoch ([\d. ]+); best epoch (\d+), (stopped early|ran all)", out,
                      re.MULTILINE)
    assert curve and 1 <= int(curve.group(2)) <= len(curve.group(1).split()), out
    assert re.search(r"^  cnn: one epoch .* a val pass costs \S+% of an epoch", out, re.MULTILINE), out


@pytest.mark.slow
def test_training_loop_compile_variant_reports_or_says_unavailable():
    """torch.compile (inductor) compiles from an empty cache: a minute or more, hence `slow`."""
    args = [a for a in TINY["training_loop"] if a != "--no-compile"]
    result = subprocess.run([sys.executable, "-m", "bench.benchmarks.training_loop", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    line = re.search(r"^torch\.compile loop:\s+(.*)$", result.stdout, re.MULTILINE)
    assert line, result.stdout
    assert "unavailable on this machine" in line.group(1) or re.search(r"ratio \S+ x vs today", line.group(1)), \
        result.stdout


def test_end_to_end_sweep_counts_and_speed_up():
    """`--grid sweep` at tiny size: identity + 3 noise settings x 5 attackers x 1 seed, on both sides."""
    args = ["--grid", "sweep", "--dataset", "synthetic", "--max-images", "300", "--seeds", "1", "--epochs", "1",
            "--batch-size", "64", "--jobs", "1"]
    result = subprocess.run([sys.executable, "-m", "bench.benchmarks.end_to_end", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    counts = r"designated\s+(\d+), clean\s+(\d+), defense fits\s+(\d+), release calls\s+(\d+)"
    harness = re.search(rf"^harness .*cold cache\):.*{counts}\s+\((\d+) runs ok\)", out, re.MULTILINE)
    naive = re.search(rf"^naive per-run pipeline:.*{counts}\s+\((\d+) runs\)", out, re.MULTILINE)
    assert harness and naive, out
    # 4 defense configurations (identity + 3) x 5 attackers x 1 seed = 20 runs on each side.
    assert harness.group(5) == naive.group(5) == "20", out
    # Harness: one designated model, the 3 transfer clean models (finetune's is the cnn among them),
    # one fit and 3 releases per configuration. Naive: everything per run.
    assert tuple(map(int, harness.groups()[:4])) == (1, 3, 4, 12), out
    assert tuple(map(int, naive.groups()[:4])) == (20, 4 * 4, 20, 60), out
    ratio = re.search(r"^speed-up:\s+(\S+) x\b", out, re.MULTILINE)
    assert ratio and math.isfinite(float(ratio.group(1))) and float(ratio.group(1)) > 0, out
    # The CPU-time bound: busy share of the cores, and a speed-up at full use no lower than the measured one.
    bound = re.search(r"^harness CPU time \(cold\):\s+(\S+) s .*busy (\d+) % .*speed-up bound (\S+) x$", out, re.MULTILINE)
    assert bound and float(bound.group(1)) > 0 and 0 < int(bound.group(2)) <= 105, out
    assert float(bound.group(3)) >= float(ratio.group(1)) * 0.95, out
    marginal = re.findall(rf"^  \+ one (setting|attacker|seed)\b.*:\s+(\S+) s\s+{counts}", out, re.MULTILINE)
    assert [m[0] for m in marginal] == ["setting", "attacker", "seed"], out
    assert all(math.isfinite(float(m[1])) and float(m[1]) > 0 for m in marginal), out
    # One more setting: its fit and 3 releases; one more seed: everything a seed needs again.
    assert tuple(map(int, marginal[0][2:])) == (0, 0, 1, 3), out
    assert tuple(map(int, marginal[2][2:])) == (1, 3, 4, 12), out


def test_fmd_release_prints_images_per_second_speed_ups_and_peak_share():
    result = run_benchmark("fmd_release", "--images", "3", "--steps", "2", "--repeats", "1", "--threads", "1",
                           "--matmul-size", "256")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("machine: "), result.stdout
    for dataset in ("fashion-mnist", "cifar10"):
        match = re.search(rf"^{dataset}: bf16 release speed-up (\S+)x over today's fp32 \(today (\S+) img/s, "
                          rf"bf16 (\S+) img/s\)$", result.stdout, re.MULTILINE)
        assert match, result.stdout
        ratio, today, bf16 = map(float, match.groups())
        assert all(math.isfinite(v) and v > 0 for v in (ratio, today, bf16)), result.stdout
        for which, bits in (("old", "fp32"), ("today", "fp32"), ("bf16", "bf16")):
            share = re.search(rf"^{dataset}: {which} release +(\S+) img/s .* = (\S+)% of the {bits} peak$",
                              result.stdout, re.MULTILINE)
            assert share and float(share.group(1)) > 0 and float(share.group(2)) > 0, result.stdout
        same = re.search(rf"^{dataset}: released pixels bit-identical to today's: bf16 (\S+)%, old loop (\S+)%",
                         result.stdout, re.MULTILINE)
        assert same and all(0 <= float(v) <= 100 for v in same.groups()), result.stdout


def test_grid_time_runs_the_grid_from_an_empty_cache_and_prints_its_ratio(tmp_path):
    result = run_benchmark("grid_time", "--dataset", "synthetic", "--preset", "smoke", "--seeds", "0",
                           "--jobs", "1", "--keep", str(tmp_path / "results"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("machine: "), result.stdout
    # identity, vfc and arl x 5 attackers, then fmd and its identity twin x 5 attackers with adaptive at 4
    # budgets; ARL's feature release cannot feed image models (transfer, finetune): not applicable.
    runs = re.search(r"^runs: 31 \(2 not_applicable, 29 ok\)$", result.stdout, re.MULTILINE)
    assert runs, result.stdout
    ratio = re.search(r"^grid time ratio: (\S+) of the 60-min goal: .*x 3/1\)$", result.stdout, re.MULTILINE)
    assert ratio and float(ratio.group(1)) > 0, result.stdout


def test_grid_time_names_a_bad_seed_list():
    result = run_benchmark("grid_time", "--seeds", "x")
    assert result.returncode == 2 and "--seeds 'x'" in result.stderr, result.stderr


def test_grid_time_refuses_results_it_would_resume(tmp_path):
    (tmp_path / "runs").mkdir()
    result = run_benchmark("grid_time", "--keep", str(tmp_path))
    assert result.returncode == 2 and "not empty" in result.stderr and str(tmp_path) in result.stderr, result.stderr


def test_the_cost_table_counts_a_preparation_once_per_precision(tmp_path):
    """A defense refitted in bf16 after an fp32 fit was prepared twice; its runs' wall times add up."""
    from bench.benchmarks.grid_cost import cost_table
    from bench.runspec import RunSpec

    (tmp_path / "runs").mkdir()
    for attacker, precision in [("adaptive", "fp32"), ("inversion", "fp32"), ("attribute", "bf16")]:
        spec = RunSpec(defense="vfc", attacker=attacker, dataset="synthetic", target_task="class",
                       attack_task="class", target_arch="cnn", seed=0, preset="smoke")
        record = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "precision": precision,
                  "metrics": {"fit_s": 3600.0}, "wall_s": 360.0, "flags": {}, "knowledge": "gray-box"}
        (tmp_path / "runs" / f"{record['run_id']}.json").write_text(json.dumps(record))
    table = cost_table(tmp_path)
    assert table.loc["synthetic", "vfc"] == pytest.approx(2 + 3 * 0.1)
