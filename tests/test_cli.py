"""CLI smoke tests: a whole run on synthetic data, resume, leaderboard, plots, compare, list."""
import json
import shutil

import pandas as pd

from bench.registry import ATTACKERS, DATASETS, DEFENSES
from bench.results.leaderboards import write_leaderboards

SMOKE = ["run", "--dataset", "synthetic", "--preset", "smoke", "--seeds", "0"]


def test_run_all_attackers_then_resume(cli, tmp_path, isolated_cache):
    res = tmp_path / "results"
    first = cli(*SMOKE, "--attacker", "all", "--results-dir", res)
    assert first.returncode == 0, first.stderr
    runs = sorted((res / "runs").glob("*.json"))
    assert len(runs) == len(ATTACKERS.names())
    for path in runs:
        r = json.loads(path.read_text())
        assert r["run_id"] == path.stem and r["status"] in ("ok", "not_applicable")
        assert r["spec"]["defense"] == "identity" and r["spec"]["preset"] == "smoke"
        assert all(isinstance(v, float) for v in r["metrics"].values())
        if r["status"] == "ok":  # identity releases the input itself: PSNR at its cap, SSIM 1
            assert r["metrics"]["release_psnr"] == 100.0 and r["metrics"]["release_ssim"] > 0.999
        assert {"owner", "attacker", "val", "test", "digest"} <= set(r["splits"])
        assert r["versions"]["torch"] and r["train"]["epochs"] == 1
    for name in ("tradeoff.png", "attackers-synthetic.png", "grid-synthetic.png"):
        assert (res / "plots" / name).stat().st_size > 1000

    # The leaderboard is regenerated from the JSON files, byte for byte.
    copy = tmp_path / "copy"
    shutil.copytree(res / "runs", copy / "runs")
    write_leaderboards(copy)
    for name in ("leaderboard.csv", "leaderboard_agg.csv", "leaderboard_worst.csv"):
        assert (copy / name).read_bytes() == (res / name).read_bytes()
    long = pd.read_csv(res / "leaderboard.csv")
    assert pd.api.types.is_float_dtype(long["value"])

    # Running the same command again trains nothing and rewrites no run.
    artifacts = {p: p.stat().st_mtime_ns for p in isolated_cache.rglob("*.pt")}
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    again = cli(*SMOKE, "--attacker", "all", "--results-dir", res)
    assert again.returncode == 0, again.stderr
    assert f"0 ok, {len(runs)} already done" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in isolated_cache.rglob("*.pt")} == artifacts
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps

    lb = cli("leaderboard", "--results-dir", res)
    assert lb.returncode == 0 and "worst case" in lb.stdout
    md = cli("leaderboard", "--results-dir", res, "--markdown")
    assert md.returncode == 0 and "|:--" in md.stdout
    cmp = cli("compare", res / "leaderboard.csv", res / "leaderboard.csv")
    assert cmp.returncode == 0 and "0 of" in cmp.stdout


def test_defended_run_schedules_identity_and_sweeps(cli, tmp_path):
    res = tmp_path / "results"
    out = cli(*SMOKE, "--defense", "vfc", "--attacker", "finetune", "--set", "finetune.budget=50,100",
              "--set", "synthetic.n=400", "--results-dir", res, "--no-plots")
    assert out.returncode == 0, out.stderr
    records = [json.loads(p.read_text()) for p in (res / "runs").glob("*.json")]
    assert sorted((r["spec"]["defense"], r["spec"]["attacker_params"]["budget"]) for r in records) == [
        ("identity", 50), ("identity", 100), ("vfc", 50), ("vfc", 100)]
    assert all(r["spec"]["dataset_params"]["n"] == 400 for r in records)
    defended = [r for r in records if r["spec"]["defense"] == "vfc" and r["status"] == "ok"]
    assert defended and all("attack_acc_identity" in r["metrics"] for r in defended)


def test_failing_plugin_is_recorded_and_others_go_on(cli, tmp_path):
    res = tmp_path / "results"
    # A layer the designated model does not have makes FMD's fit raise (only the fitted model can tell);
    # the identity twin still runs.
    out = cli(*SMOKE, "--defense", "fmd", "--attacker", "adaptive", "--set", "fmd.layer=bogus",
              "--results-dir", res, "--no-plots")
    assert out.returncode == 1
    assert "1 ok" in out.stdout and "1 failed" in out.stdout and "bogus" in out.stdout
    records = {json.loads(p.read_text())["spec"]["defense"]: json.loads(p.read_text())
               for p in (res / "runs").glob("*.json")}
    assert records["identity"]["status"] == "ok"
    assert records["fmd"]["status"] == "failed" and "Traceback" in records["fmd"]["traceback"]


def test_eval_split_val_never_touches_test(cli, tmp_path):
    res = tmp_path / "results"
    out = cli(*SMOKE, "--attacker", "adaptive", "--eval-split", "val", "--results-dir", res, "--no-plots")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(p.read_text()) for p in (res / "runs").glob("*.json")]
    assert record["spec"]["eval_split"] == "val"
    assert record["splits"]["test"] == record["splits"]["val"]  # the two halves of val


def test_list_shows_every_plugin_and_its_hyperparameters(cli):
    out = cli("list")
    assert out.returncode == 0
    for reg in (DEFENSES, ATTACKERS, DATASETS):
        for name in reg.names():
            assert f"  {name}" in out.stdout
            for param in reg.hparams(name):
                assert f"{param}=" in out.stdout


def test_a_budget_or_release_cap_larger_than_the_data_is_said(main_inprocess, tmp_path):
    out = main_inprocess("run", "--dataset", "synthetic", "--preset", "smoke", "--defense", "fmd", "--attacker",
                         "adaptive", "--set", "adaptive.budget=100000", "--max-release", "100000", "--no-plots",
                         "--results-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "note: the release cap 100000 of fmd covers every released split of seed 0" in out.stderr
    assert "note: adaptive.budget=100000 is more than the" in out.stderr and "learns from all" in out.stderr


def test_the_help_hint_names_the_command_that_was_mistyped(main_inprocess):
    assert "(see `python -m bench --help`)" in main_inprocess("explode").stderr
    assert "(see `python -m bench run --help`)" in main_inprocess("run", "--seeds").stderr
