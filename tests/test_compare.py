"""`bench compare` answers "did it help?".

- Two configurations or defenses of one results directory (or leaderboard), cell by cell: per
  attacker both means, their 95 % CIs, n, the difference and whether the CIs are disjoint.
- Two leaderboards: the same configurations on both sides, as before.
- Cells on one side only are listed, never dropped; cells whose runs used different data (two
  `folder` directories) are kept apart and listed.
- A selection that is ambiguous or matches nothing is one error line naming the valid labels.
- No line is longer than 120 characters.
"""
import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.compare.sides import configurations, parse_selection, select, Side
from bench.results.leaderboards import read_long, write_leaderboards
from bench.results.records import write_run
from bench.runspec import RunSpec
from conftest import REPO

SUMMARY = re.compile(r"^(\d+) of (\d+) differences exceed", re.MULTILINE)


def record(defense: str = "identity", params: dict | None = None, attacker: str = "adaptive", seed: int = 0,
           dataset: str = "synthetic", leakage: float = 1.0, utility: float = 0.9, data: str = "same",
           task: str = "class") -> dict:
    """An `ok` record as the runner writes it; `data` names the content its seed used (its data digest)."""
    spec = RunSpec(defense=defense, attacker=attacker, dataset=dataset, target_task=task, attack_task=task,
                   target_arch="cnn", seed=seed, preset="smoke", defense_params=params or {})
    jitter = 0.01 * seed  # three seeds give an interval
    metrics = {"utility_acc": utility + jitter, "clean_acc": 0.9}
    if attacker == "inversion":
        metrics.update(leakage=leakage + jitter, ssim=0.2 + 0.5 * leakage + jitter, psnr=12 + 10 * leakage)
    else:
        metrics.update(leakage=leakage + jitter, attack_acc=0.25 + 0.6 * leakage + jitter, chance=0.25)
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": metrics,
            "flags": {"weak_attacker": False}, "knowledge": "gray-box",
            "data_digest": digest(data, seed)}


def digest(data: str, seed: int) -> str:
    return hashlib.sha256(f"{data} {seed}".encode()).hexdigest()


def results(root: Path, *configs, seeds=(0, 1, 2), attackers=("adaptive", "inversion"), **common) -> Path:
    """A results dir holding every (defense, params, leakage) of `configs` against `attackers`, with leaderboards."""
    for defense, params, leakage in configs:
        for attacker in attackers:
            for seed in seeds:
                write_run(root, record(defense, params, attacker, seed, leakage=leakage, **common))
    write_leaderboards(root)
    return root


def short_lines(out) -> list[str]:
    lines = out.stdout.splitlines()
    too_long = [line for line in lines if len(line) > 120]
    assert not too_long, too_long
    return lines


def one_error(out, *needles):
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def rows(lines: list[str], metric: str) -> list[str]:
    return [line for line in lines if line.strip().startswith(metric + " ")]


# --- two configurations of one results directory ------------------------------------------------
def test_two_defenses_on_one_dataset_give_per_attacker_values_cis_and_verdict(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("identity", {}, 1.0), ("jpeg", {"quality": 5}, 0.3), ("noise", {}, 0.8))
    out = main_inprocess("compare", "--results-dir", res, "--a", "noise", "--b", "jpeg", "--dataset", "synthetic")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    assert "  A: noise" in lines and "  B: jpeg(quality=5)" in lines
    for attacker in ("designated model [class]", "adaptive [class]", "inversion [class]"):
        assert f"  {attacker}" in lines, attacker
    adaptive = lines[lines.index("  adaptive [class]") + 1]
    # leakage: both means with their CIs and n, B - A, and the verdict (B's leakage is lower: B better)
    assert re.search(r"leakage +0\.810 \[[-0-9.]+, [0-9.]+\] n=3 +0\.310 \[[-0-9.]+, [0-9.]+\] n=3 +-0\.500 +yes, "
                     r"B better", adaptive), adaptive
    assert rows(lines, "attack_acc") and rows(lines, "ssim") and rows(lines, "psnr") and rows(lines, "utility_acc")
    n_sig, n_total = map(int, SUMMARY.search(out.stdout).groups())
    assert n_total == 1 + 2 + 3 and n_sig == 5  # utility is equal on both sides; every leakage metric differs
    assert "only in" not in out.stdout and "different data" not in out.stdout


def test_a_label_picks_one_configuration_among_several(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("jpeg", {"quality": 5}, 0.3), ("jpeg", {"quality": 10}, 0.5), ("jpeg", {}, 0.9))
    out = main_inprocess("compare", "--results-dir", res, "--a", "jpeg(quality=5)", "--b", "jpeg( quality = 10 )")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    assert "  A: jpeg(quality=5)" in lines and "  B: jpeg(quality=10)" in lines
    # `name()` is the configuration with every hyperparameter at its default (the bare name means all of them).
    out = main_inprocess("compare", "--results-dir", res, "--a", "jpeg()", "--b", "jpeg(quality=5)")
    assert out.returncode == 0, out.stderr
    assert "  A: jpeg" in short_lines(out)


def test_an_ambiguous_defense_names_the_labels_to_choose_from(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("jpeg", {"quality": 5}, 0.3), ("jpeg", {}, 0.9), ("noise", {}, 0.8))
    out = main_inprocess("compare", "--results-dir", res, "--a", "jpeg", "--b", "noise")
    one_error(out, "--a 'jpeg'", "matches 2 configurations on synthetic", "jpeg(quality=5)", "jpeg()")


@pytest.mark.parametrize("given, needles", [
    ("blur", ["--b 'blur'", "no run of defense 'blur'", "valid choices: jpeg, noise"]),
    ("jpeg(qual=5)", ["jpeg has no hyperparameter qual", "quality", "valid choices: jpeg(quality=5)"]),
    ("jpeg(quality=7)", ["--b 'jpeg(quality=7)' matches no configuration", "valid choices: jpeg(quality=5)"]),
    ("jpeg(quality)", ["'quality' is not param=value"]),
    ("jpeg [val]", ["matches no configuration", "jpeg(quality=5)"]),
])
def test_a_selection_matching_nothing_names_the_valid_choices(tmp_path, main_inprocess, given, needles):
    res = results(tmp_path / "r", ("jpeg", {"quality": 5}, 0.3), ("noise", {}, 0.8))
    one_error(main_inprocess("compare", "--results-dir", res, "--a", "noise", "--b", given), *needles)


def test_hyperparameters_are_matched_as_the_label_prints_them_or_as_numbers(tmp_path):
    res = results(tmp_path / "r", ("fmd", {"eps": 8 / 255}, 0.3), ("fmd", {"eps": 4 / 255}, 0.5))
    side = Side("r", read_long(res / "leaderboard.csv"))
    assert set(configurations(side.long).selector) == {"fmd(eps=8/255)", "fmd(eps=4/255)"}
    for text in ("fmd(eps=8/255)", f"fmd(eps={8 / 255!r})", "fmd(eps = 8/255)"):
        chosen = select(side, parse_selection(text, "--a")).long
        assert set(chosen.defense_params) == {'{"eps": 0.03137254901960784}'}, text


@pytest.mark.parametrize("args, needles", [
    (["--a", "noise"], ["--a needs --b"]),
    (["{res}/leaderboard.csv", "{res}/leaderboard.csv", "{res}/leaderboard.csv"], ["3 leaderboards"]),
    (["{res}/leaderboard.csv"], ["give two leaderboards", "--a and --b"]),
    (["{res}/leaderboard.csv", "--results-dir", "{res}", "--a", "noise", "--b", "noise"], ["not both"]),
    (["--results-dir", "{res}", "--a", "noise", "--b", "noise", "--dataset", "cifar"],
     ["--dataset 'cifar'", "valid choices: synthetic"]),
    (["--results-dir", "{res}/nothing", "--a", "noise", "--b", "noise"], ["no runs in", "nothing"]),
])
def test_arguments_that_do_not_make_a_comparison(tmp_path, main_inprocess, args, needles):
    res = results(tmp_path / "r", ("noise", {}, 0.8))
    one_error(main_inprocess("compare", *[a.format(res=res) for a in args]), *needles)


# --- what is not compared is said ------------------------------------------------------------
def test_cells_on_one_side_only_are_listed(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("jpeg", {"quality": 5}, 0.3))
    results(res, ("noise", {}, 0.8), attackers=("adaptive",))
    out = main_inprocess("compare", "--results-dir", res, "--a", "jpeg", "--b", "noise")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    only = lines.index("only in A: 1 cell(s), not compared")
    assert "jpeg(quality=5): inversion [class]" in lines[only + 1]
    assert "cells not compared (listed above): 1 only in A" in lines


def test_two_leaderboards_compare_the_same_configurations_and_list_the_rest(tmp_path, main_inprocess):
    a = results(tmp_path / "a", ("identity", {}, 1.0), ("jpeg", {"quality": 5}, 0.3))
    b = results(tmp_path / "b", ("identity", {}, 1.0), ("noise", {}, 0.8), attackers=("adaptive",))
    out = main_inprocess("compare", a / "leaderboard.csv", b / "leaderboard.csv")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    assert "  configuration: identity" in lines and "  configuration: jpeg(quality=5)" not in lines
    assert SUMMARY.search(out.stdout).groups() == ("0", "3")  # identity x adaptive: utility, leakage, attack_acc
    text = re.sub(r"\n {6}", " ", "\n".join(lines))  # a listing's continuation lines, joined
    assert re.search(r"only in A: 4 cell\(s\), not compared\n.*identity: inversion \[class\]\n"
                     r".*jpeg\(quality=5\): designated model \[class\], adaptive \[class\], inversion \[class\]", text)
    assert re.search(r"only in B: 2 cell\(s\), not compared\n.*noise: designated model \[class\], "
                     r"adaptive \[class\]", text)


def test_a_configuration_of_one_leaderboard_against_one_of_another(tmp_path, main_inprocess):
    a = results(tmp_path / "a", ("jpeg", {"quality": 5}, 0.3), ("noise", {}, 0.5))
    b = results(tmp_path / "b", ("jpeg", {"quality": 5}, 0.3), ("noise", {}, 0.8))
    out = main_inprocess("compare", a / "leaderboard.csv", b / "leaderboard.csv", "--a", "noise", "--b", "noise")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    assert "  configuration: noise" in lines
    assert f"A: {a / 'leaderboard.csv'}, noise" in lines and f"B: {b / 'leaderboard.csv'}, noise" in lines
    assert SUMMARY.search(out.stdout).groups() == ("5", "6")  # every leakage metric; utility is equal


def test_a_dataset_on_one_side_only_lists_that_side(tmp_path, main_inprocess):
    a = results(tmp_path / "a", ("identity", {}, 1.0))
    b = results(tmp_path / "b", ("identity", {}, 1.0), **FOLDER)
    out = main_inprocess("compare", a / "leaderboard.csv", b / "leaderboard.csv", "--dataset", "folder")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    assert "no cell appears on both sides" in lines and "only in B: 3 cell(s), not compared" in lines
    assert "only in A:" not in out.stdout


def test_a_leaderboard_compared_with_itself_differs_nowhere(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("identity", {}, 1.0), ("jpeg", {"quality": 5}, 0.3))
    out = main_inprocess("compare", res / "leaderboard.csv", res / "leaderboard.csv")
    assert out.returncode == 0, out.stderr
    n_sig, n_total = map(int, SUMMARY.search(out.stdout).groups())
    assert n_sig == 0 and n_total == 2 * (1 + 2 + 3)
    assert "not compared" not in out.stdout and "unchecked" not in out.stdout


def test_single_seeds_have_no_ci(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("jpeg", {"quality": 5}, 0.3), ("noise", {}, 0.8), seeds=(0,))
    out = main_inprocess("compare", "--results-dir", res, "--a", "jpeg", "--b", "noise")
    assert out.returncode == 0, out.stderr
    leak = rows(short_lines(out), "leakage")
    assert leak and all(re.search(r"0\.300 n=1 +0\.800 n=1 +\+0\.500 +n = 1: no test$", r) for r in leak), leak
    assert SUMMARY.search(out.stdout).group(1) == "0"


def test_one_seed_against_three_is_never_called_better_and_shows_no_interval(tmp_path, main_inprocess):
    """A single seed far outside the other side's CI is still not a tested difference."""
    three = results(tmp_path / "a", ("noise", {}, 0.8))
    one = results(tmp_path / "b", ("noise", {}, 0.2), seeds=(0,))
    out = main_inprocess("compare", three / "leaderboard.csv", one / "leaderboard.csv")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    assert "better" not in out.stdout
    assert all(line.endswith("n = 1: no test") for line in rows(lines, "leakage")), rows(lines, "leakage")
    # An interval is printed only for the side with seeds to make one.
    assert not re.search(r"\] n=1\b", out.stdout)
    assert "0 of 6 differences exceed the 95 % confidence intervals (disjoint CIs; 6 with n = 1 on a side, not tested)" \
        in out.stdout
    summary = out.stdout[out.stdout.index("summary (B against A):"):]
    assert re.search(r"utility: A .* n=3, B 0\.900 n=1, B - A [-+]0\.0\d\d: n = 1: no test", summary), summary
    assert re.search(r"worst case over 2 attacker\(s\) both met: A .* n=3 \(.*\), B 0\.200 n=1 .*: n = 1: no test",
                     summary.replace("\n        ", " ")), summary


def test_the_summary_gives_utility_and_worst_case_verdicts_with_seeds_on_both_sides(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("jpeg", {"quality": 5}, 0.3), ("noise", {}, 0.8))
    out = main_inprocess("compare", "--results-dir", res, "--a", "noise", "--b", "jpeg")
    assert out.returncode == 0, out.stderr
    summary = out.stdout[out.stdout.index("summary (B against A):"):].replace("\n        ", " ")
    assert "utility: A 0.910 [" in summary and ": no\n" in summary   # same utility on both sides
    assert re.search(r"worst case over 2 attacker\(s\) both met: A 0\.810 \[.*\] n=3 .* B 0\.310 \[.*\] n=3 .*"
                     r"B - A -0\.500: yes, B better", summary), summary


# --- datasets are told apart by content -------------------------------------------------------
FOLDER = {"dataset": "folder", "task": "label"}


def test_two_folder_datasets_of_one_name_are_kept_apart(tmp_path, main_inprocess):
    a = results(tmp_path / "a", ("identity", {}, 1.0), data="faces", **FOLDER)
    b = results(tmp_path / "b", ("identity", {}, 1.0), data="cats", **FOLDER)
    out = main_inprocess("compare", a / "leaderboard.csv", b / "leaderboard.csv")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    assert "no cell appears on both sides" in lines and SUMMARY.search(out.stdout).groups() == ("0", "0")
    apart = [line for line in lines if line.startswith("on different data")]
    assert apart == ["on different data (the data digests of one seed differ, e.g. two `folder` directories): "
                     "3 cell(s), not compared"]
    assert f"seed 0: data {digest('faces', 0)[:12]} vs {digest('cats', 0)[:12]}" in out.stdout
    # The same directory twice is the same data: compared.
    same = results(tmp_path / "c", ("identity", {}, 1.0), data="faces", **FOLDER)
    out = main_inprocess("compare", a / "leaderboard.csv", same / "leaderboard.csv")
    assert SUMMARY.search(out.stdout).groups() == ("0", "6") and "different data" not in out.stdout


def test_two_configurations_run_on_different_data_are_kept_apart(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("identity", {}, 1.0), data="faces", **FOLDER)
    results(res, ("jpeg", {"quality": 5}, 0.3), data="cats", **FOLDER)  # labels.csv was replaced in between
    results(res, ("noise", {}, 0.8), data="faces", **FOLDER)
    out = main_inprocess("compare", "--results-dir", res, "--a", "identity", "--b", "jpeg")
    assert out.returncode == 0, out.stderr
    assert "on different data" in out.stdout and SUMMARY.search(out.stdout).groups() == ("0", "0")
    out = main_inprocess("compare", "--results-dir", res, "--a", "identity", "--b", "noise")
    assert "different data" not in out.stdout and SUMMARY.search(out.stdout).group(2) == "6"


def test_a_leaderboard_without_its_records_says_its_data_is_unchecked(tmp_path, main_inprocess):
    res = results(tmp_path / "r", ("identity", {}, 1.0), **FOLDER)
    shutil.copy(res / "leaderboard.csv", tmp_path / "alone.csv")
    out = main_inprocess("compare", tmp_path / "alone.csv", res / "leaderboard.csv")
    assert out.returncode == 0, out.stderr
    assert "note: the data of 3 compared cell(s) is unchecked" in " ".join(short_lines(out))


# --- the committed reference results ----------------------------------------------------------
def test_two_defenses_of_the_committed_cifar10_results(main_inprocess):
    """The issue's "done when": two defenses of one dataset, per attacker both values, CIs, verdict."""
    leaderboard = REPO / "results" / "reference" / "leaderboard.csv"
    long = read_long(leaderboard).query("dataset == 'cifar10'")
    seeds = long.groupby(["defense", "defense_params", "eval_split", "max_release"]).seed.nunique().rename("seeds")
    configs = configurations(long).join(seeds, on=["defense", "defense_params", "eval_split", "max_release"])
    # The labels as they are now (a sweep may add configurations, and a bare name would then be ambiguous),
    # each defense's with the most seeds: those have CIs.
    pick = {d: configs[configs.defense == d].sort_values("seeds").selector.iloc[-1] for d in ("vfc", "fmd")}
    out = main_inprocess("compare", leaderboard, "--a", pick["vfc"], "--b", pick["fmd"], "--dataset", "cifar10")
    assert out.returncode == 0, out.stderr
    lines = short_lines(out)
    for attacker in ("designated model", "adaptive", "finetune", "inversion"):
        assert any(line.startswith(f"  {attacker} [") for line in lines), attacker
    values = r"[-0-9.]+ \[[-0-9.]+, [-0-9.]+\] n=\d"
    assert re.search(rf"leakage +{values} +{values} +[-+][0-9.]+ +(no|yes, [AB] better)$", out.stdout, re.MULTILINE)
    n_sig, n_total = map(int, SUMMARY.search(out.stdout).groups())
    assert n_total > 0


def test_the_table_api_keeps_its_columns():
    from bench.compare.cells import compare_sides

    long = read_long(REPO / "results" / "reference" / "leaderboard.csv").query("dataset == 'fashion-mnist'")
    table = compare_sides(long, long, same_configuration=True).matched
    assert {"metric", "mean_a", "n_a", "mean_b", "n_b", "diff", "significant"} <= set(table.columns)
    assert isinstance(table, pd.DataFrame) and len(table) and not table.significant.any()


def test_text_a_spreadsheet_would_evaluate_is_written_as_text_and_read_back(tmp_path):
    import pandas as pd

    from bench.results.leaderboards import from_spreadsheet_safe, spreadsheet_safe

    names = ["=HYPERLINK(\"x\")", "+1", "-cmd", "@SUM(A1)", "vfc", "a=b"]
    df = pd.DataFrame({"task": names, "value": [-1.0, 2.0, -3.0, 4.0, 5.0, 6.0]})
    safe = spreadsheet_safe(df)
    assert list(safe.task) == ["'=HYPERLINK(\"x\")", "'+1", "'-cmd", "'@SUM(A1)", "vfc", "a=b"]
    assert list(safe.value) == list(df.value)   # numbers stay numbers
    assert list(from_spreadsheet_safe(safe.task)) == names


def test_comparing_a_configuration_with_itself_says_so(main_inprocess):
    from conftest import REPO

    out = main_inprocess("compare", "--results-dir", REPO / "results" / "reference", "--dataset", "fashion-mnist",
                         "--a", "vfc()", "--b", "vfc()")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("note: A and B are the same runs"), out.stdout


def test_a_configuration_a_results_dir_lacks_is_taken_from_the_reference_results(tmp_path, main_inprocess):
    """A user who ran only VFC compares it with a baseline of the reference results, on the same data."""
    from conftest import REPO

    (tmp_path / "mine" / "runs").mkdir(parents=True)
    for path in (REPO / "results" / "reference" / "runs").glob("*.json"):
        spec = json.loads(path.read_text())["spec"]
        if spec["dataset"] == "fashion-mnist" and spec["defense"] in ("vfc", "identity") and not spec.get("max_release"):
            (tmp_path / "mine" / "runs" / path.name).write_bytes(path.read_bytes())
    out = main_inprocess("compare", "--results-dir", tmp_path / "mine", "--a", "vfc()", "--b", "jpeg(quality=25)",
                         "--dataset", "fashion-mnist")
    assert out.returncode == 0, out.stderr
    assert f"(reference results: {tmp_path / 'mine'} has no jpeg(quality=25))" in " ".join(out.stdout.split())
    assert "on different data" not in out.stdout and "summary (B against A):" in out.stdout
    # Nothing of that name anywhere: the error names the user's own configurations.
    out = main_inprocess("compare", "--results-dir", tmp_path / "mine", "--a", "vfc()", "--b", "jpeg(quality=3)")
    assert out.returncode == 2 and "vfc()" in out.stderr


def test_cells_made_by_two_versions_of_a_defense_are_named(tmp_path, main_inprocess):
    def made_by(root: Path, code: str) -> Path:
        for attacker in ("adaptive", "inversion"):
            for seed in (0, 1, 2):
                r = record("noise", {}, attacker, seed, leakage=0.8)
                write_run(root, {**r, "code_digests": {"defense": code * 64, "attacker": "a" * 64,
                                                       "dataset": "d" * 64}})
        write_leaderboards(root)
        return root

    a, b = made_by(tmp_path / "a", "1"), made_by(tmp_path / "b", "2")
    out = main_inprocess("compare", a / "leaderboard.csv", b / "leaderboard.csv")
    assert out.returncode == 0, out.stderr
    assert (f"note: defense noise: A's runs were made by its code {'1' * 12}, B's by {'2' * 12}: a difference may "
            "come from the code, not only the seeds") in out.stdout
    same = main_inprocess("compare", a / "leaderboard.csv", made_by(tmp_path / "c", "1") / "leaderboard.csv")
    assert "made by its code" not in same.stdout
