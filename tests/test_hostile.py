"""The table of bad inputs and faults, one case each, gathered from `tests/cases_*.py`.

Each case asserts its message, exit code 2 or a `failed` record (or correct handling), that no
file outside the results dir was written, and that no finished record changed (`hostile.py`).
"""
import importlib
import sys

import pytest

from conftest import REPO
from hostile import check_case

sys.path.insert(0, str(REPO / "tests"))
GROUPS = sorted(p.stem for p in (REPO / "tests").glob("cases_*.py"))
CASES = {f"{group[len('cases_'):]}: {name}": case
         for group in GROUPS for name, case in importlib.import_module(group).CASES.items()}


def test_the_table_covers_the_issue():
    assert len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize("name", CASES)
def test_hostile(name, tmp_path, monkeypatch, main_inprocess):
    check_case(CASES[name], tmp_path, monkeypatch, main_inprocess)
