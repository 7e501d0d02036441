"""A `folder` dataset chooses its default tasks by a rule, says which tasks a command uses, and is
labelled in tables by its directory.

Its defaults are guesses: a UTKFace-style `age` column first would become a many-class task that
trains to below chance. A default task has few classes with enough training images each
(`bench.data.folder.RULE`); a command says in one line which tasks it uses, from the flags or by
default, and at which image size; and two folders in one results dir are two rows of a table.
"""
import csv
import json
import sys
from pathlib import Path

import pytest

from bench.cli import build_parser
from bench.data.folder import MAX_CLASSES, Folder
from bench.planning import plan_specs

sys.path.insert(0, str(Path(__file__).parent))
from cases_folder import _tree  # noqa: E402  small PNGs in {data}

N = 30   # more rows than MAX_CLASSES: an age column of N values is over the class limit


def _faces(tmp: Path, header: str = "file,age,gender,race", name: str = "data") -> Path:
    """A UTKFace-like folder: `age` with N distinct numbers (one per image), `gender` and `race` with 2 and 3."""
    (tmp / "data").mkdir(parents=True)
    (tmp / "outside").mkdir(exist_ok=True)
    values = {"age": lambda i: str(20 + i), "id": lambda i: f"p{i}", "gender": lambda i: "fm"[i % 2],
              "race": lambda i: "abc"[i % 3]}
    columns = header.split(",")[1:]
    rows = [",".join([f"a{i:02d}.png", *(values.get(c, lambda i: str(i % 2))(i) for c in columns)])
            for i in range(N)]
    _tree(tmp, rows, header, n=N)
    return (tmp / "data").rename(tmp / name) if name != "data" else tmp / "data"


def _plan(data: Path, *flags: str, attacker: str = "adaptive") -> list:
    return plan_specs(build_parser().parse_args(["run", "--dataset", "folder", "--preset", "smoke", "--attacker",
                                                 attacker, "--data-dir", str(data), *flags]))


def _said(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("folder dataset")]


def test_a_many_valued_number_column_is_passed_over_with_its_reason(tmp_path, capsys):
    data = _faces(tmp_path)
    assert N > MAX_CLASSES
    specs = _plan(data, attacker="adaptive,attribute")
    assert {s.target_task for s in specs} == {"gender"} and {s.attack_task for s in specs} == {"gender", "race"}
    out = capsys.readouterr()
    line, = _said(out.out)
    assert str(data.resolve()) in line
    assert "designated task 'gender' (2 classes, by default)" in line
    assert "private task 'race' (3 classes, by default)" in line
    assert f"passed over: 'age' ({N} distinct numbers, more than {MAX_CLASSES} classes)" in line
    assert "32x32 px RGB" in line
    for option in ("--target-task", "--private-task", "--set folder.image_size="):
        assert option in line, (option, line)
    assert "warning" not in out.err


def test_the_line_names_the_tasks_given_by_flags(tmp_path, capsys):
    data = _faces(tmp_path)
    specs = _plan(data, "--target-task", "race", "--private-task", "gender", attacker="attribute")
    assert {(s.target_task, s.attack_task) for s in specs} == {("race", "gender")}
    line, = _said(capsys.readouterr().out)
    assert "designated task 'race' (3 classes, from --target-task)" in line
    assert "private task 'gender' (2 classes, from --private-task)" in line


def test_the_default_private_task_is_another_sensible_column_than_the_designated_one(tmp_path, capsys):
    data = _faces(tmp_path)
    _plan(data, "--target-task", "gender")
    line, = _said(capsys.readouterr().out)
    assert "designated task 'gender' (2 classes, from --target-task)" in line
    assert "private task 'race' (3 classes, by default)" in line


def test_an_explicit_many_valued_target_is_kept_with_a_warning(tmp_path, capsys):
    data = _faces(tmp_path)
    specs = _plan(data, "--target-task", "age")
    assert {s.target_task for s in specs} == {"age"}
    out = capsys.readouterr()
    assert f"designated task 'age' ({N} classes, from --target-task)" in _said(out.out)[0]
    warning, = [line for line in out.err.splitlines() if line.startswith("warning")]
    assert "--target-task age" in warning and f"{N} distinct numbers" in warning


def test_no_sensible_column_is_refused_naming_each_column_and_its_classes(tmp_path, main_inprocess):
    data = _faces(tmp_path, header="file,age,id")
    out = main_inprocess("run", "--dataset", "folder", "--preset", "smoke", "--no-plots", "--results-dir",
                         tmp_path / "results", "--data-dir", data)
    assert out.returncode == 2, out.stdout + out.stderr
    error, = out.stderr.strip().splitlines()
    assert f"'age' {N} distinct numbers, more than {MAX_CLASSES} classes" in error
    assert f"'id' {N} classes, more than {MAX_CLASSES} classes" in error
    assert "--target-task" in error and "valid choices: age, id" in error
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").iterdir())
    assert _said(out.stdout) == []


def test_too_few_images_per_class_is_a_reason_too(tmp_path, capsys):
    data = _faces(tmp_path, header="file,kind,gender")
    rows = (data / "labels.csv").read_text().splitlines()
    # 12 classes over 24 training rows: 2 per class, fewer than the rule's minimum.
    kinds = [r.split(",")[0] + f",k{i % 12}," + r.split(",")[2] for i, r in enumerate(rows[1:])]
    (data / "labels.csv").write_text("\n".join([rows[0], *kinds]) + "\n")
    _plan(data)
    line, = _said(capsys.readouterr().out)
    assert "designated task 'gender'" in line
    assert "'kind' (12 classes, 2.0 training images per class, fewer than 5)" in line


def test_the_image_size_said_is_the_one_set(tmp_path, capsys):
    _plan(_faces(tmp_path), "--set", "folder.image_size=16", "--set", "folder.channels=1")
    line, = _said(capsys.readouterr().out)
    assert "16x16 px grey" in line


def test_one_task_column_says_there_is_no_private_task(tmp_path, capsys):
    _plan(_faces(tmp_path, header="file,gender"))
    line, = _said(capsys.readouterr().out)
    assert "designated task 'gender'" in line and "no private task (one task column)" in line


def test_a_second_plan_of_the_same_command_says_nothing_new(tmp_path, capsys):
    data = _faces(tmp_path)
    _plan(data)
    _plan(data)
    assert len(_said(capsys.readouterr().out)) == 1


def test_dozens_of_task_columns_stay_one_short_line(tmp_path, capsys):
    header = "file,gender," + ",".join(f"attr{i}" for i in range(40))
    _plan(_faces(tmp_path, header=header))
    line, = _said(capsys.readouterr().out)
    assert "(41 in all)" in line and "attr39" not in line


@pytest.mark.parametrize("option", [("--target-task", "nope"), ("--private-task", "nope")])
def test_a_bad_task_flag_is_one_error_line_and_nothing_announced(tmp_path, main_inprocess, option):
    out = main_inprocess("run", "--dataset", "folder", "--preset", "smoke", "--attacker", "attribute",
                         "--no-plots", "--results-dir", tmp_path / "results", "--data-dir", _faces(tmp_path), *option)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1 and "'nope'" in errors[0] and "gender" in errors[0], out.stderr
    assert _said(out.stdout) == []


def test_the_loader_loads_without_a_word(tmp_path, capsys):
    data = Folder().load(_faces(tmp_path))
    assert (data.default_task, data.private_task) == ("gender", "race")
    assert capsys.readouterr().out == ""


# --- labels in tables ---------------------------------------------------------------------------
def _leaderboard(res: Path) -> list[dict]:
    with open(res / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def _run(main_inprocess, data: Path, res: Path, *flags):
    return main_inprocess("run", "--dataset", "folder", "--preset", "smoke", "--attacker", "adaptive", "--no-plots",
                          "--results-dir", res, "--data-dir", data, *flags)


def test_two_folders_in_one_results_dir_are_two_labels(tmp_path, main_inprocess, isolated_cache):
    res = tmp_path / "results"
    faces = _faces(tmp_path / "a", header="file,gender", name="faces")
    cats = _faces(tmp_path / "b", header="file,kind", name="cats")
    for data in (faces, cats):
        out = _run(main_inprocess, data, res)
        assert out.returncode == 0, out.stdout + out.stderr
    records = [json.loads(p.read_text()) for p in (res / "runs").glob("*.json")]
    labels = {f"folder:{r['data_name']}@{r['dataset_digest'][:8]}" for r in records}
    assert {r["data_name"] for r in records} == {"faces", "cats"} and len(labels) == 2
    assert {row["dataset"] for row in _leaderboard(res)} == labels

    # A record written before the directory was recorded still loads, under the plain name.
    path = next(p for p in (res / "runs").glob("*.json") if json.loads(p.read_text())["data_name"] == "cats")
    record = json.loads(path.read_text())
    del record["data_name"]
    path.write_text(json.dumps(record))
    out = main_inprocess("leaderboard", "--results-dir", res)
    assert out.returncode == 0, out.stderr
    assert {row["dataset"] for row in _leaderboard(res)} == {"folder"} | {x for x in labels if ":faces@" in x}


def test_another_folder_with_the_same_runs_does_not_replace_the_first(tmp_path, main_inprocess, isolated_cache):
    res = tmp_path / "results"
    faces = _faces(tmp_path / "a", header="file,gender", name="faces")
    other = _faces(tmp_path / "b", header="file,gender", name="other")
    (other / "a00.png").write_bytes((other / "a01.png").read_bytes())   # other content, same columns
    assert _run(main_inprocess, faces, res).returncode == 0
    before = {p: p.read_bytes() for p in (res / "runs").glob("*.json")}
    out = _run(main_inprocess, other, res)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "'faces'" in out.stderr and "'other'" in out.stderr and "--results-dir" in out.stderr
    assert {p: p.read_bytes() for p in (res / "runs").glob("*.json")} == before


@pytest.mark.parametrize("name", ["", "../x", "a$b", "x" * 65, 3])
def test_a_record_whose_directory_name_is_no_plain_name_is_refused(tmp_path, name):
    from bench.errors import BenchError
    from bench.results.records import load_runs
    from hostile import REFERENCE_RECORD

    (tmp_path / "runs").mkdir()
    record = {**json.loads(REFERENCE_RECORD.read_text()), "data_name": name}
    (tmp_path / "runs" / REFERENCE_RECORD.name).write_text(json.dumps(record))
    with pytest.raises(BenchError, match="data_name"):
        load_runs(tmp_path)
