"""Bad input: one clear line naming the bad value (and the valid choices), exit 2, nothing written."""
import pytest

SMOKE = ["run", "--dataset", "synthetic", "--preset", "smoke", "--attacker", "adaptive"]

CASES = {
    "unknown defense": (["run", "--defense", "nope"], ["nope", "identity", "vfc"]),
    "unknown attacker": (["run", "--attacker", "adaptive,nope"], ["nope", "transfer"]),
    "unknown dataset": (["run", "--dataset", "nope"], ["nope", "fashion-mnist", "synthetic"]),
    "unknown target task": (SMOKE + ["--target-task", "nope"], ["nope", "class", "parity"]),
    "unknown private task": (SMOKE[:-1] + ["attribute", "--private-task", "nope"], ["nope", "parity"]),
    "unknown --set plugin": (SMOKE + ["--set", "vfc.beta=1"], ["vfc", "adaptive", "synthetic"]),
    "unknown --set key": (SMOKE + ["--set", "adaptive.nope=1"], ["nope", "arch"]),
    "ill-typed --set": (SMOKE[:-1] + ["finetune", "--set", "finetune.budget=abc"], ["finetune.budget", "abc", "int"]),
    "malformed --set": (SMOKE + ["--set", "adaptive"], ["adaptive", "name.param=value"]),
    "bad seeds": (SMOKE + ["--seeds", "a,b"], ["a,b"]),
    "negative seeds": (SMOKE + ["--seeds=-1"], ["-1"]),
    "bad preset": (SMOKE + ["--preset", "huge"], ["huge", "smoke", "default", "full"]),
    "bad device": (SMOKE + ["--device", "tpu"], ["tpu", "auto", "cpu", "cuda"]),
    "jobs 0": (SMOKE + ["--jobs", "0"], ["--jobs 0"]),
    "missing data dir": (SMOKE + ["--data-dir", "/nonexistent/dir"], ["/nonexistent/dir"]),
    "unknown target arch": (SMOKE + ["--target-arch", "vgg"], ["vgg", "cnn", "resnet"]),
    "bad backend": (SMOKE + ["--backend", "spark"], ["spark", "loky", "dask"]),
    "bad eval split": (SMOKE + ["--eval-split", "train"], ["train", "val", "test"]),
    "sweep of dataset options": (SMOKE + ["--set", "synthetic.n=100,200"], ["synthetic"]),
    "unknown flag": (SMOKE + ["--frobnicate"], ["--frobnicate"]),
    "unknown subcommand": (["explode"], ["explode"]),
}


@pytest.mark.parametrize("args,needles", CASES.values(), ids=CASES.keys())
def test_bad_input_one_line_exit_2_nothing_written(main_inprocess, tmp_path, args, needles):
    res = tmp_path / "results"
    out = main_inprocess(*args, *(["--results-dir", res] if args[0] == "run" else []))
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not res.exists()


def test_cuda_on_a_cpu_machine(main_inprocess, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = main_inprocess(*SMOKE, "--device", "cuda", "--results-dir", tmp_path / "r")
    assert out.returncode == 2 and "cuda" in out.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_reports_on_empty_results_dir(main_inprocess, tmp_path, command):
    out = main_inprocess(command, "--results-dir", tmp_path / "empty")
    assert out.returncode == 2 and "no runs" in out.stderr


def test_compare_missing_file(main_inprocess, tmp_path):
    out = main_inprocess("compare", tmp_path / "a.csv", tmp_path / "b.csv")
    assert out.returncode == 2 and "a.csv" in out.stderr


def test_corrupt_cache_is_rebuilt(cli, tmp_path, isolated_cache):
    first = cli(*SMOKE, "--results-dir", tmp_path / "r1", "--no-plots")
    assert first.returncode == 0, first.stderr
    victim = next((isolated_cache / "artifacts" / "model").glob("*.pt"))
    victim.write_bytes(victim.read_bytes()[:100])  # cut short, as by a kill mid-write
    second = cli(*SMOKE, "--results-dir", tmp_path / "r2", "--no-plots")
    assert second.returncode == 0, second.stderr
    assert "checksum" in second.stderr
    assert len(victim.read_bytes()) > 100  # rebuilt


def test_corrupt_result_file(main_inprocess, tmp_path):
    runs = tmp_path / "r" / "runs"
    runs.mkdir(parents=True)
    (runs / "abc.json").write_text("{not json")
    out = main_inprocess("leaderboard", "--results-dir", tmp_path / "r")
    assert out.returncode == 2 and "abc.json" in out.stderr
