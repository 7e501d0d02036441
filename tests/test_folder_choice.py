"""A `folder` dataset says which tasks and image size it took by default, and how to change them.

Its defaults are guesses (the first task column is the designated task, the second the private
one, images at 32 px): a UTKFace-style `age` column would become a 104-class task unnoticed.
"""
import sys
from pathlib import Path

import pytest

from bench.data.folder import Folder

sys.path.insert(0, str(Path(__file__).parent))
from cases_folder import N, _tree  # noqa: E402  20 small PNGs in {data}


def _faces(tmp: Path, header: str = "file,age,gender") -> Path:
    """A UTKFace-like folder: `age` with many classes first, then `gender`."""
    (tmp / "data").mkdir()
    (tmp / "outside").mkdir()
    columns = header.split(",")[1:]
    rows = [",".join([f"a{i:02d}.png", *(str(i % 10 + 1) if c == "age" else str(i % 2) for c in columns)])
            for i in range(N)]
    _tree(tmp, rows, header)
    return tmp / "data"


def _said(capsys) -> list[str]:
    out = capsys.readouterr()
    return [line for line in out.out.splitlines() if line.startswith("folder dataset")]


def test_the_default_tasks_and_image_size_are_said_in_one_line(tmp_path, capsys):
    data = _faces(tmp_path)
    Folder().load(data)
    lines = _said(capsys)
    assert len(lines) == 1, lines
    line = lines[0]
    assert str(data.resolve()) in line
    assert "designated task 'age' (10 classes)" in line and "private task 'gender' (2 classes)" in line
    assert "32x32 px" in line
    for option in ("--target-task", "--private-task", "--set folder.image_size="):
        assert option in line, (option, line)


def test_the_image_size_said_is_the_one_set(tmp_path, capsys):
    Folder(image_size=16, channels=1).load(_faces(tmp_path))
    line, = _said(capsys)
    assert "16x16 px grey" in line


def test_one_task_column_says_there_is_no_private_task(tmp_path, capsys):
    Folder().load(_faces(tmp_path, header="file,age"))
    line, = _said(capsys)
    assert "designated task 'age'" in line and "no private task" in line


def test_a_second_load_of_the_same_data_says_nothing_new(tmp_path, capsys):
    data = _faces(tmp_path)
    Folder().load(data)
    Folder().load(data)
    assert len(_said(capsys)) == 1


def test_dozens_of_task_columns_stay_one_short_line(tmp_path, capsys):
    header = "file,age," + ",".join(f"attr{i}" for i in range(40))
    Folder().load(_faces(tmp_path, header=header))
    line, = _said(capsys)
    assert "(41 in all)" in line and "attr39" not in line


@pytest.mark.parametrize("option", [("--target-task", "nope"), ("--private-task", "nope")])
def test_the_line_goes_to_stdout_so_an_error_stays_one_line_on_stderr(tmp_path, main_inprocess, option):
    data = _faces(tmp_path)
    out = main_inprocess("run", "--dataset", "folder", "--preset", "smoke", "--attacker", "attribute",
                         "--no-plots", "--results-dir", tmp_path / "results", "--data-dir", data, *option)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1 and "'nope'" in errors[0], out.stderr
    assert "designated task 'age'" in out.stdout
