"""A plugin's code is part of what a result is: an edited plugin never reuses results or fits its old code made."""
import json
import re
from pathlib import Path

import pytest

from bench import code_digest
from bench.errors import BenchError
from bench.results.records import validate_record
from bench.runspec import RunSpec
from conftest import REPO
from test_plugin_distribution import _distribution

PLUGIN = '''
import os

import torch
from bench.protocol import Defense

OFFSET = 0.25


class Shift(Defense):
    name = "shift"
    description = "adds a learned offset to every pixel"
    releases = "image"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def _fit(self, data, *, seed):
        with open(os.environ["SHIFT_FIT_LOG"], "a") as log:  # how often a fit really ran
            log.write("fit\\n")
        self.offset_ = torch.tensor(OFFSET * self.scale)

    def _release(self, xb):
        return (xb + self.offset_).clamp(0, 1)
'''
RUN = ("run", "--defense", "shift", "--attacker", "adaptive", "--dataset", "synthetic", "--preset", "smoke",
       "--no-reference", "--no-plots")


def _records(results):
    return {r["spec"]["defense"]: r for r in (json.loads(p.read_text()) for p in (results / "runs").glob("*.json"))}


def test_an_edited_plugin_runs_again_and_never_reuses_its_old_fit(cli, tmp_path):
    site, results, log = tmp_path / "site", tmp_path / "results", tmp_path / "fits.log"
    env = {**_distribution(site, "shiftdefense", "[bench.defenses]\nshift = shiftdefense:Shift\n"),
           "SHIFT_FIT_LOG": str(log)}
    source = site / "shiftdefense.py"
    source.write_text(PLUGIN)

    first = cli(*RUN, "--results-dir", results, env_extra=env)
    assert first.returncode == 0, first.stderr
    before = _records(results)["shift"]
    assert set(before["code_digests"]) == {"defense", "attacker", "dataset", "harness"}
    assert log.read_text().count("fit") == 1

    # An unchanged plugin: nothing runs, and a deleted record is rebuilt from the cached fit.
    (results / "runs" / f"{before['run_id']}.json").unlink()
    again = cli(*RUN, "--results-dir", results, env_extra=env)
    assert again.returncode == 0 and "1 ok, 1 already done" in again.stdout, again.stdout + again.stderr
    assert log.read_text().count("fit") == 1 and "code changed" not in again.stderr

    source.write_text(PLUGIN.replace("OFFSET = 0.25", "OFFSET = 0.5"))
    edited = cli(*RUN, "--results-dir", results, env_extra=env)
    assert edited.returncode == 0, edited.stderr
    assert re.search(r"defense shift: code changed since 1 record\(s\) in .* were made; they run again",
                     edited.stderr), edited.stderr
    assert "1 ok, 1 already done" in edited.stdout   # the identity twin's code did not change
    after = _records(results)["shift"]
    assert log.read_text().count("fit") == 2, "the old code's cached fit was reused"
    assert after["code_digests"]["defense"] != before["code_digests"]["defense"]
    assert after["metrics"]["release_psnr"] != before["metrics"]["release_psnr"]

    # Kept on purpose: the records made by the earlier code count as done.
    source.write_text(PLUGIN.replace("OFFSET = 0.25", "OFFSET = 0.75"))
    kept = cli(*RUN, "--results-dir", results, "--keep-stale-code", env_extra=env)
    assert kept.returncode == 0, kept.stderr
    assert "defense shift: code changed since 1 record(s)" in kept.stderr and "kept as done" in kept.stderr
    assert "0 ok, 2 already done" in kept.stdout and log.read_text().count("fit") == 2


def _record(**code):
    spec = RunSpec("vfc", "adaptive", "synthetic", "class", "class", "cnn", 0, "smoke")
    record = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": {}}
    if code:
        record["code_digests"] = code
    return record


NOW = {"defense": "d1", "attacker": "a1", "dataset": "s1", "harness": "h1"}


def test_a_record_is_judged_by_its_own_digests_or_else_by_its_results_dirs_file():
    assert code_digest.changed(_record(defense="d1", attacker="a1", dataset="s1"), NOW) == []
    assert code_digest.changed(_record(defense="d0", attacker="a1", dataset="s0"), NOW) == \
        [("defense", "vfc"), ("dataset", "synthetic")]
    # The harness's digest is recorded, never a reason to rerun.
    assert code_digest.changed(_record(defense="d1", attacker="a1", dataset="s1", harness="h0"), NOW) == []
    # Unknown code (a plugin whose source cannot be read) matches anything.
    assert code_digest.changed(_record(defense=None, attacker="a1", dataset="s1"), NOW) == []
    # Written before records had digests: the results dir's file says what made it, else today's code did.
    legacy = _record()
    assert code_digest.changed(legacy, NOW) == []
    assert code_digest.changed(legacy, NOW, {"defense": {"vfc": "d1"}, "attacker": {"adaptive": "a0"}}) == \
        [("attacker", "adaptive")]
    # The file vouches for the code it names, also for a record that names older code itself.
    made_by_d0 = _record(defense="d0", attacker="a1", dataset="s1")
    assert code_digest.changed(made_by_d0, NOW, {"defense": {"vfc": "d1"}}) == []
    assert code_digest.changed(made_by_d0, NOW, {"defense": {"vfc": "d0"}}) == [("defense", "vfc")]


def test_the_reference_results_are_made_by_the_code_in_this_checkout():
    """Every committed reference record counts as done: its plugins' code is the code that made it.

    When this fails, a built-in plugin's code changed. If its numbers did not (a refactor; check
    with the slow test in tests/test_reference_results.py, or rerun a cell of the plugin and
    `bench compare` it with the reference), record the new digests on purpose:
    `python -m bench.code_digest --write results/reference` (and results/reference/tuning,
    results/precision). If they did, the reference runs of that plugin must be made again.
    """
    code_digest.forget()
    now = code_digest.builtin_digests()
    for results in (REPO / "results" / "reference", REPO / "results" / "reference" / "tuning",
                    REPO / "results" / "precision"):
        recorded = code_digest.legacy_digests(results)
        stale = {f"{kind} {name}" for kind in now for name in now[kind]
                 if recorded.get(kind, {}).get(name) != now[kind][name]}
        assert not stale, f"{results.relative_to(REPO)}: code of {sorted(stale)} is not the code that made its records"


def test_a_record_with_malformed_code_digests_is_refused(tmp_path):
    good = _record(defense="d1", attacker="a1", dataset=None)
    assert validate_record(good, tmp_path / f"{good['run_id']}.json") is good
    for bad in ({"defense": "d1"}, {"defense": 3, "attacker": "a", "dataset": "s"}, "d1"):
        record = {**good, "code_digests": bad}
        with pytest.raises(BenchError, match="code_digests"):
            validate_record(record, tmp_path / f"{good['run_id']}.json")


def test_a_plugins_digest_covers_its_own_package_and_no_other_plugin(tmp_path, monkeypatch):
    from bench.registry import ATTACKERS, DATASETS, DEFENSES

    assert set(code_digest.source_modules(DEFENSES.get("vfc"))) == {"defenses.vfc"}
    assert set(code_digest.source_modules(ATTACKERS.get("attribute"))) == {"attackers.attribute", "attackers.adaptive"}
    # A loader inside the harness: its own package, bench.data, not the rest of bench.
    assert set(code_digest.source_modules(DATASETS.get("synthetic"))) <= {
        f"bench.data.{m.stem}" for m in (REPO / "bench" / "data").glob("*.py")}

    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("WIDTH = 8\n\ndef width():\n    return WIDTH\n")
    (pkg / "defense.py").write_text("from bench.protocol import Defense\nfrom mypkg.nets import width\n\n"
                                    "class D(Defense):\n    name = 'd'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    cls = importlib.import_module("mypkg.defense").D
    before = code_digest.class_digest(cls)
    assert set(code_digest.source_modules(cls)) == {"mypkg.defense", "mypkg.nets"}
    (pkg / "nets.py").write_text("WIDTH = 16\n\ndef width():\n    return WIDTH\n")
    assert code_digest.class_digest(cls) != before


# --- a refactor of a built-in plugin is told apart from a change of its numbers ------------------------
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _smallest_cell(defense: str, machine: str) -> dict | None:
    """The committed Fashion-MNIST seed-0 record of `defense` made on this kind of CPU that ran fastest: its
    cheapest cell to redo (fp32 sums are bit-identical only on one kind of CPU); None when there is none."""
    records = [json.loads(p.read_text()) for p in (REPO / "results" / "reference" / "runs").glob("*.json")]
    mine = [r for r in records if r["status"] == "ok" and r["spec"]["defense"] == defense
            and r["spec"]["dataset"] == "fashion-mnist" and r["spec"]["seed"] == 0 and r.get("cpu") == machine
            and r.get("precision", "fp32") == "fp32" and r["spec"].get("eval_split", "test") == "test"]
    return min(mine, key=lambda r: (r.get("wall_s", float("inf")), r["run_id"])) if mine else None


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.parametrize("defense", ["identity", "vfc", "arl", "fmd", "noise", "blur", "jpeg", "pixelate"])
def test_every_built_in_defense_still_makes_its_committed_numbers(defense, cli, tmp_path):
    """The check behind updating code_digests.json on purpose: each built-in defense's cheapest committed
    cell, redone by the code of this checkout at fp32 on one thread (as the reference ran), gives the
    same numbers bit for bit. A refactor passes; a change of what a defense computes does not."""
    import shlex

    from bench.report.provenance import reproduce_command
    from bench.software import cpu

    committed = _smallest_cell(defense, cpu())
    if committed is None:
        pytest.skip(f"no committed fp32 record of {defense} names this CPU ({cpu()}): records made before "
                    "records named their CPU, or on another, cannot be redone bit for bit here")
    args = shlex.split(reproduce_command(committed["spec"]))[3:]   # after `python -m bench`
    run = cli(*args, "--precision", "fp32", "--no-reference", "--results-dir", tmp_path, "--no-plots",
              env_extra={"OMP_NUM_THREADS": "1"}, timeout=3600)
    assert run.returncode == 0, run.stdout + run.stderr
    fresh = json.loads((tmp_path / "runs" / f"{committed['run_id']}.json").read_text())
    timings = {"fit_s", "attack_fit_s", "release_ms_per_image"}
    assert {k: v for k, v in fresh["metrics"].items() if k not in timings} == \
        {k: v for k, v in committed["metrics"].items() if k not in timings}


def test_a_refactor_of_a_built_in_defense_is_detected_and_kept_only_on_purpose(tmp_path, monkeypatch):
    """Whitespace added to defenses/jpeg.py: its reference records are not silently kept (their runs
    would be made again) nor silently dropped (they stay in the tables) until the new digest is
    written on purpose, after the slow test below confirms the numbers."""
    import shutil

    from bench.results.records import load_runs
    from bench.results.tables import long_table

    reference = REPO / "results" / "reference"
    record = next(r for r in load_runs(reference) if r["spec"]["defense"] == "jpeg")
    shutil.copy(reference / code_digest.LEGACY_FILE, tmp_path / code_digest.LEGACY_FILE)
    source = code_digest._source
    monkeypatch.setattr(code_digest, "_source", lambda module: source(module) + (
        b"\n\n" if module.__name__ == "defenses.jpeg" else b""))
    code_digest.forget()
    try:
        now = {"defense": code_digest.plugin_digest("defense", "jpeg")}
        assert code_digest.changed(record, now, code_digest.legacy_digests(tmp_path)) == [("defense", "jpeg")]
        assert record["run_id"] in set(long_table([record]).run_id), "a stale record left the tables"
        assert code_digest.main(["--write", str(tmp_path)]) == 0
        code_digest.forget()
        assert code_digest.changed(record, now, code_digest.legacy_digests(tmp_path)) == []
    finally:
        code_digest.forget()
