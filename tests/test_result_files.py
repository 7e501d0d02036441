"""Run records and leaderboards: one validation point, one record per run, n counts seeds,
plot names that stay in plots/ (the hostile CLI cases are in cases_results.py)."""
import json
import os
import sys

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.results.leaderboards import read_long, write_leaderboards
from bench.results.records import check_planned, load_runs, read_record, read_run, validate_record, write_run
from bench.results.tables import aggregate, long_table
from bench.runspec import RunSpec
from conftest import REPO

sys.path.insert(0, str(REPO / "tests"))
from cases_results import ok_record  # noqa: E402

COMMITTED = ("results/reference", "results/reference/tuning")


@pytest.mark.parametrize("where", COMMITTED)
def test_every_committed_record_validates(where):
    runs = load_runs(REPO / where)
    files = list((REPO / where / "runs").glob("*.json"))
    assert len(runs) == len(files) >= 45  # every file is one loaded record (323 + 45 when this was written)
    for path in sorted((REPO / where / "runs").glob("*.json")):
        record = validate_record(json.loads(path.read_text()), path)
        assert RunSpec.from_dict(record["spec"]).run_id == record["run_id"] == path.stem


def test_records_as_the_harness_writes_them_validate(tmp_path):
    record = ok_record(seed=3)
    write_run(tmp_path, record)
    assert read_run(tmp_path, record["run_id"]) == record
    assert read_run(tmp_path, "0" * 16) is None
    capped = RunSpec(defense="fmd", attacker="inversion", dataset="cifar10", target_task="class",
                     attack_task="class", target_arch="cnn", seed=0, preset="default", eval_split="val",
                     max_release=500)
    write_run(tmp_path, {**record, "run_id": capped.run_id, "spec": capped.to_dict(), "status": "failed",
                         "metrics": {}, "reason": "boom", "traceback": "...", "data_digest": None})
    assert len(load_runs(tmp_path)) == 2


def test_a_real_run_writes_records_that_validate(tmp_path, main_inprocess):
    res = tmp_path / "r"
    out = main_inprocess("run", "--dataset", "synthetic", "--preset", "smoke", "--attacker", "adaptive",
                         "--defense", "vfc", "--no-plots", "--results-dir", res)
    assert out.returncode == 0, out.stderr
    runs = load_runs(res)
    assert len(runs) == 2 and {r["spec"]["defense"] for r in runs} == {"identity", "vfc"}


def test_temporary_and_other_files_in_runs_are_not_records(tmp_path):
    record = ok_record()
    write_run(tmp_path, record)
    (tmp_path / "runs" / f".{record['run_id']}.json.abc123.tmp").write_text("half a reco")
    (tmp_path / "runs" / "notes.txt").write_text("not a record")
    assert load_runs(tmp_path) == [record]


def test_a_dangling_symlink_is_no_absent_record(tmp_path):
    """The runner would otherwise rerun the run and write through or over the link."""
    (tmp_path / "runs").mkdir()
    os.symlink(tmp_path / "nowhere.json", tmp_path / "runs" / "0123456789abcdef.json")
    with pytest.raises(BenchError, match="0123456789abcdef.json.*does not exist"):
        read_run(tmp_path, "0123456789abcdef")


def test_a_symlink_to_another_record_in_runs_is_a_duplicate(tmp_path):
    record = ok_record()
    write_run(tmp_path, record)
    os.symlink(f"{record['run_id']}.json", tmp_path / "runs" / "alias.json")
    with pytest.raises(BenchError, match=r"duplicate result files: .*alias\.json"):
        load_runs(tmp_path)


def test_a_symlink_within_runs_under_its_own_name_is_fine(tmp_path):
    record = ok_record()
    (tmp_path / "runs" / "store").mkdir(parents=True)
    (tmp_path / "runs" / "store" / f"{record['run_id']}.json").write_text(json.dumps(record))
    os.symlink(f"store/{record['run_id']}.json", tmp_path / "runs" / f"{record['run_id']}.json")
    assert load_runs(tmp_path) == [record]


def test_a_metric_may_be_an_int_but_not_a_bool_or_nan(tmp_path):
    record = ok_record()
    path = tmp_path / "runs" / f"{record['run_id']}.json"
    validate_record({**record, "metrics": {"released_bytes_per_image": 1024}}, path)
    for bad in (True, "0.5", None, float("inf"), float("nan"), 10 ** 400, [0.5], {"a": 1}):
        with pytest.raises(BenchError, match="metric 'x'"):
            validate_record({**record, "metrics": {"x": bad}}, path)


def test_unknown_record_fields_are_kept(tmp_path):
    """Fields the leaderboard does not read (timings, versions, what later versions add) are not checked."""
    record = {**ok_record(), "data_digest": "abc", "wall_s": 1.0, "anything": [1, {"b": None}]}
    write_run(tmp_path, record)
    assert load_runs(tmp_path) == [record]


def test_not_a_regular_file(tmp_path):
    (tmp_path / "runs").mkdir()
    os.mkfifo(tmp_path / "runs" / "x.json")   # reading it would block forever
    with pytest.raises(BenchError, match="x.json: not a regular file"):
        read_record(tmp_path / "runs" / "x.json")


# --- n counts seeds --------------------------------------------------------------------------
def test_n_counts_seeds():
    runs = [ok_record(seed=s) for s in (0, 1, 2)]
    agg = aggregate(long_table(runs))
    assert set(agg.n) == {3}


def test_the_same_run_twice_is_refused_by_the_leaderboard():
    record = ok_record()
    with pytest.raises(BenchError, match="seed 0 of one configuration"):
        long_table([record, record])


def test_a_legacy_record_and_a_new_one_with_its_legacy_value_are_one_seed(tmp_path):
    """ARL's `private` arrived with default "all": a record without it ran on "half", like a new
    record that sets "half". Distinct run_ids, one seed of one configuration: refused, both named."""
    old = ok_record(defense="arl", params={"lam": 1.0})
    new = ok_record(defense="arl", params={"lam": 1.0, "private": "half"})
    assert old["run_id"] != new["run_id"]
    write_run(tmp_path, old)
    write_run(tmp_path, new)
    with pytest.raises(BenchError) as e:
        load_runs(tmp_path)
    assert old["run_id"] in str(e.value) and new["run_id"] in str(e.value) and "defense_params" in str(e.value)
    # Another value of `private` is another configuration: both count.
    other = ok_record(defense="arl", params={"lam": 1.0, "private": "all"})
    assert set(aggregate(long_table([old, other])).n) == {1}


def test_a_failed_record_beside_an_ok_one_is_not_counted():
    failed = {**ok_record(dataset_params={"n": 300}), "status": "failed", "metrics": {}}
    agg = aggregate(long_table([ok_record(dataset_params={"n": 600}), failed]))
    assert set(agg.n) == {1}


def test_aggregate_refuses_one_seed_on_two_rows():
    long = long_table([ok_record(seed=s) for s in (0, 1)])
    twin = long[long.seed == 0].assign(run_id="f" * 16)
    with pytest.raises(BenchError, match="n counts seeds"):
        aggregate(pd.concat([long, twin]))


def test_planned_runs_that_would_count_a_recorded_seed_twice_are_refused(tmp_path):
    recorded = ok_record(dataset_params={"n": 600})
    write_run(tmp_path, recorded)
    same = RunSpec.from_dict(recorded["spec"])
    other_data = RunSpec.from_dict({**recorded["spec"], "dataset_params": {"n": 300}})
    other_seed = RunSpec.from_dict({**recorded["spec"], "dataset_params": {"n": 300}, "seed": 1})
    runs = load_runs(tmp_path)
    check_planned(runs, [same, other_seed], tmp_path)   # the same run (skipped), and a new seed
    with pytest.raises(BenchError, match=f"{recorded['run_id']}.json and the planned run .*--results-dir"):
        check_planned(runs, [other_data], tmp_path)


# --- leaderboards read back ------------------------------------------------------------------
def test_a_written_leaderboard_reads_back_as_written(tmp_path):
    for defense, params, strength in (("identity", {}, 0.0), ("arl", {"lam": 1.0}, 0.5)):
        for seed in (0, 1):
            write_run(tmp_path, ok_record(defense=defense, params=params, seed=seed, strength=strength))
    long = write_leaderboards(tmp_path)["long"]
    back = read_long(tmp_path / "leaderboard.csv")
    pd.testing.assert_frame_equal(back[long.columns].reset_index(drop=True), long, check_dtype=False)
    assert not back.value.isna().any() and back.seed.dtype.kind == "i"


def test_the_committed_leaderboard_reads_and_compares_with_itself():
    long = read_long(REPO / "results" / "reference" / "leaderboard.csv")
    assert len(long) > 1000 and long.value.dtype == float
    from bench.compare.cells import compare_sides
    table = compare_sides(long, long, same_configuration=True).matched
    assert len(table) and not table.significant.any() and (table["diff"] == 0).all()


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("\n\n", "empty"), ("a\x00b\n", "NUL"), ("x,y\n1,2\n", "missing columns"),
])
def test_read_long_refuses(tmp_path, text, message):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(BenchError, match=message):
        read_long(tmp_path / "l.csv")


# --- plot names ------------------------------------------------------------------------------
HOSTILE_NAMES = ["../../x", "a/b", "/etc/passwd", "..", ".", "", "x\x00y", "~root", "a\\b", "..\\..\\x",
                 "-rf", "ö/ü", "x" * 300, "grid-x", "a b\nc"]


def test_slugs_keep_plain_names_and_make_hostile_ones_safe_and_distinct():
    from bench.plots.files import slug
    for plain in ("fashion-mnist", "cifar10", "celeba", "fmd", "label_source", "latent_dim", "eps"):
        assert slug(plain) == plain
    slugs = [slug(n) for n in HOSTILE_NAMES]
    assert len(set(slugs)) == len(slugs)
    for s in slugs:
        assert s and "/" not in s and "\\" not in s and "\x00" not in s and not s.startswith(".") and len(s) < 80


def test_plot_paths_stay_in_the_plots_dir(tmp_path):
    from bench.plots.files import plot_path
    out = tmp_path / "plots"
    for name in HOSTILE_NAMES:
        for parts in (("grid", name), ("sweep", name, name, name)):
            path = plot_path(out, *parts)
            assert path.parent == out and path.resolve().parent == out.resolve() and path.suffix == ".png"


def test_identity_alone_in_two_settings_plots(tmp_path):
    """Two identity configurations (capped and uncapped) and nothing else: one chance level per attacker."""
    from bench.plots.write import write_plots
    for cap in (None, 2):
        spec = RunSpec(defense="identity", attacker="adaptive", dataset="synthetic", target_task="class",
                       attack_task="class", target_arch="cnn", seed=0, preset="smoke", max_release=cap)
        write_run(tmp_path, {**ok_record(), "run_id": spec.run_id, "spec": spec.to_dict()})
    names = {p.name for p in write_plots(tmp_path)}
    assert {"tradeoff.png", "attackers-synthetic.png"} <= names
