"""Bad input: one clear line naming the bad value (and the valid choices), exit 2, nothing written."""
import pytest
from PIL import Image

SMOKE = ["run", "--dataset", "synthetic", "--preset", "smoke", "--attacker", "adaptive"]
# `{data}` and `{tmp}` stand for the test's data directory and tmp_path; FILES puts what a case needs there.
FOLDER = ["run", "--dataset", "folder", "--preset", "smoke", "--attacker", "adaptive", "--data-dir", "{data}"]

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
    "bad precision": (SMOKE + ["--precision", "fp16"], ["fp16", "auto", "fp32", "bf16"]),
    "vfc latent_dim 0": (SMOKE + ["--defense", "vfc", "--set", "vfc.latent_dim=0"], ["vfc.latent_dim=0", ">= 1"]),
    "arl depth out of range": (SMOKE + ["--defense", "arl", "--set", "arl.depth=9"], ["arl.depth=9", "between 1"]),
    "fmd eps above 1": (SMOKE + ["--defense", "fmd", "--set", "fmd.eps=16"], ["fmd.eps=16", "[0, 1]"]),
    "transfer unknown arch": (SMOKE[:-1] + ["transfer", "--set", "transfer.archs=vgg"], ["transfer.archs", "cnn"]),
    "BENCH_CACHE is a file": (SMOKE, ["BENCH_CACHE", "not a directory"]),
    # Three images are too few for a default task (bench.data.folder.RULE): the task is named.
    "dataset too small for the preset": (FOLDER + ["--target-task", "label"], ["too small", "preset smoke", "empty"]),
    "reference that is no results dir": (SMOKE + ["--reference", "{tmp}"], ["--reference", "no runs/"]),
    "reference and no reference": (SMOKE + ["--reference", "{tmp}", "--no-reference"],
                                   ["--reference", "--no-reference"]),
    "jobs 0": (SMOKE + ["--jobs", "0"], ["--jobs 0"]),
    "missing data dir": (SMOKE + ["--data-dir", "/nonexistent/dir"], ["/nonexistent/dir"]),
    "unknown target arch": (SMOKE + ["--target-arch", "vgg"], ["vgg", "cnn", "resnet"]),
    "bad backend": (SMOKE + ["--backend", "spark"], ["spark", "loky", "dask"]),
    "bad eval split": (SMOKE + ["--eval-split", "train"], ["train", "val", "test"]),
    "sweep of dataset options": (SMOKE + ["--set", "synthetic.n=100,200"], ["synthetic"]),
    "unknown flag": (SMOKE + ["--frobnicate"], ["--frobnicate"]),
    "unknown subcommand": (["explode"], ["explode"]),
    "empty defense list": (SMOKE + ["--defense", ","], ["no defense", "identity", "vfc"]),
    "empty seed range": (SMOKE + ["--seeds", "3-1"], ["3-1"]),
    "empty seeds": (SMOKE + ["--seeds", ""], ["--seeds ''"]),
    "non-integer jobs": (SMOKE + ["--jobs", "two"], ["--jobs", "two"]),
    "timeout 0": (SMOKE + ["--timeout", "0"], ["--timeout 0", "positive"]),
    "negative timeout": (SMOKE + ["--timeout", "-5"], ["--timeout -5", "positive"]),
    "timeout nan": (SMOKE + ["--timeout", "nan"], ["--timeout nan"]),
    "non-numeric timeout": (SMOKE + ["--timeout", "soon"], ["--timeout", "soon"]),
    "timeout with dask": (SMOKE + ["--timeout", "60", "--backend", "dask"], ["--timeout", "Dask", "loky"]),
    "empty --set value": (SMOKE + ["--set", "adaptive.arch="], ["adaptive.arch=", "name.param=value"]),
    "unknown dataset option": (SMOKE + ["--set", "synthetic.nope=1"], ["synthetic.nope", "classes", "size"]),
    "ill-typed dataset option": (SMOKE + ["--set", "synthetic.n=many"], ["synthetic.n", "many", "int"]),
    "ill-typed float": (SMOKE + ["--defense", "vfc", "--set", "vfc.beta=big"], ["vfc.beta", "big", "float"]),
    "ill-typed bool": (["run", "--dataset", "cifar10", "--set", "cifar10.download=maybe"],
                       ["cifar10.download", "maybe", "bool"]),
    "folder without --data-dir": (FOLDER[:-2], ["folder", "--data-dir"]),
    "folder without labels.csv": (FOLDER, ["labels.csv", "not found"]),
    "labels.csv without file column": (FOLDER, ["labels.csv", "no `file` column", "name, label"]),
    "labels.csv without task column": (FOLDER, ["labels.csv", "no task column"]),
    "labels.csv without rows": (FOLDER, ["labels.csv", "no rows"]),
    "labels.csv empty cell": (FOLDER, ["labels.csv row 3", "empty `label`"]),
    "labels.csv bad split": (FOLDER, ["labels.csv row 2", "'training'", "train, val, test"]),
    "labels.csv one class spelt two ways": (FOLDER, ["labels.csv", "'01'", "'1'", "two ways"]),
    "labels.csv names a missing image": (FOLDER, ["labels.csv row 3", "b.png", "does not exist"]),
    "folder with no private task": (FOLDER[:-3] + ["attribute", "--data-dir", "{data}", "--target-task", "label"],
                                    ["attribute", "--private-task", "label"]),
    "corrupt result file": (SMOKE, ["corrupt result file", "abc.json"]),
    "result file that is no run record": (SMOKE, ["abc.json", "not a run record", "run_id"]),
    "zero release cap": (SMOKE + ["--max-release", "0"], ["--max-release 0", ">= 1"]),
    "seed range backwards": (SMOKE + ["--seeds", "3-1"], ["--seeds '3-1'", "empty", "1-3"]),
    "compare a CSV that is no leaderboard": (["compare", "{tmp}/a.csv", "{tmp}/a.csv"],
                                             ["a.csv", "missing columns", "run_id"]),
}


def _labels(text):
    def write(tmp_path):
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "labels.csv").write_text(text)
    return write


def _images(*names, labels):
    def write(tmp_path):
        _labels(labels)(tmp_path)
        for name in names:
            Image.new("RGB", (8, 8), (len(name) * 40, 0, 0)).save(tmp_path / "data" / name)
    return write


def _runs_file(tmp_path, text):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "abc.json").write_text(text)


def _corrupt_result(tmp_path):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "abc.json").write_text('{"run_id": "abc", "sta')


FILES = {
    "folder without labels.csv": lambda tmp_path: (tmp_path / "data").mkdir(),
    "labels.csv without file column": _labels("name,label\na.png,cat\n"),
    "labels.csv without task column": _labels("file\na.png\n"),
    "labels.csv without rows": _labels("file,label\n"),
    "labels.csv empty cell": _labels("file,label\na.png,cat\nb.png,\n"),
    "labels.csv bad split": _labels("file,label,split\na.png,cat,training\n"),
    "labels.csv one class spelt two ways": _images("a.png", "b.png", "c.png",
                                                   labels="file,label\na.png,1\nb.png,01\nc.png,2\n"),
    "labels.csv names a missing image": _images("a.png", labels="file,label\na.png,cat\nb.png,dog\n"),
    "folder with no private task": _images("a.png", "bb.png", labels="file,label\na.png,cat\nbb.png,dog\n"),
    "corrupt result file": _corrupt_result,
    "result file that is no run record": lambda tmp_path: _runs_file(tmp_path, "[1, 2]"),
    "compare a CSV that is no leaderboard": lambda tmp_path: (tmp_path / "a.csv").write_text("x,y\n1,2\n"),
    "dataset too small for the preset": _images("a.png", "b.png", "c.png",
                                                labels="file,label\na.png,cat\nb.png,dog\nc.png,cat\n"),
    # BENCH_CACHE is tmp_path/cache (conftest's isolated_cache): a file there instead of a directory.
    "BENCH_CACHE is a file": lambda tmp_path: (tmp_path / "cache").write_text("not a directory"),
}


def _files(root) -> dict | None:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else None


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit_2_nothing_written(main_inprocess, tmp_path, case):
    args, needles = CASES[case]
    res = tmp_path / "results"
    if case in FILES:
        FILES[case](tmp_path)
    before = _files(res)
    args = [a.format(data=tmp_path / "data", tmp=tmp_path) for a in args]
    out = main_inprocess(*args, *(["--results-dir", res] if args[0] == "run" else []))
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert _files(res) == before


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
