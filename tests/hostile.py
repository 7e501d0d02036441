"""The bad-input and fault table of `test_hostile.py`: what a `Case` is and how one is checked.

Each group of hostile inputs keeps its cases in its own `tests/cases_<group>.py` (a dict `CASES`,
name -> Case); `test_hostile.py` runs every case of every such module through `check_case`.
A case is one `python -m bench ...` command (run in this process) against a temporary tree:

    {tmp}/data      a data directory the case may fill (`--data-dir {data}`)
    {tmp}/results   the results dir (`--results-dir {res}`), seeded with one finished
                    reference record that no case may change
    {tmp}/outside   files outside both, that nothing may read into a number or write
    {tmp}/cache     this test's BENCH_CACHE (the harness may write there)

and the outcome it must have:

    "exit2"   one line on stderr starting with `error:` and holding every needle, exit
              code 2, nothing written in the results dir;
    "failed"  exit code 1 and a `failed` record whose reason holds every needle;
    "ok"      exit code 0 (correct handling: `check` says what correct is).

Whatever the outcome: no file outside the results dir and the cache changes, and the
finished record is byte for byte what it was.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from conftest import REPO

# Runs on the generated dataset in seconds: the base of cases that need a real run.
SMOKE = ("run", "--dataset", "synthetic", "--preset", "smoke", "--attacker", "adaptive", "--no-plots",
         "--results-dir", "{res}")
FOLDER = ("run", "--dataset", "folder", "--preset", "smoke", "--attacker", "adaptive", "--no-plots",
          "--results-dir", "{res}", "--data-dir", "{data}")
# A committed reference record: the finished run every case's results dir starts with.
REFERENCE_RECORD = REPO / "results" / "reference" / "runs" / "00bd9a6f6cb456ba.json"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    needles: tuple[str, ...] = ()
    # setup(tmp, monkeypatch): write what the case needs under tmp, patch what it must patch.
    setup: Callable | None = None
    outcome: str = "exit2"
    # check(tmp, out): further assertions once the command has run (out: returncode, stdout, stderr).
    check: Callable | None = None
    # Cases whose results dir is itself the bad input (a file, unwritable) say so, and get no seeded record.
    seed_record: bool = True
    extra: dict = field(default_factory=dict)


def layout(tmp: Path) -> dict[str, Path]:
    paths = {"tmp": tmp, "data": tmp / "data", "res": tmp / "results", "outside": tmp / "outside"}
    paths["data"].mkdir(exist_ok=True)
    paths["outside"].mkdir(exist_ok=True)
    (paths["outside"] / "secret.txt").write_text("nothing may read this into a number\n")
    return paths


def seed_reference(res: Path) -> Path:
    (res / "runs").mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(REFERENCE_RECORD, res / "runs" / REFERENCE_RECORD.name))


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    """Every file under `root` (outside `skip`), by relative path: its bytes, or where a link points."""
    out = {}
    if not root.exists() and not root.is_symlink():
        return out
    if not root.is_dir():
        return {".": root.read_bytes() if root.is_file() else b"<special>"}
    for p in sorted(root.rglob("*")):
        if any(p == s or s in p.parents for s in skip):
            continue
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = b"-> " + str(p.readlink()).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def check_case(case: Case, tmp: Path, monkeypatch, main_inprocess) -> None:
    paths = layout(tmp)
    reference = seed_reference(paths["res"]) if case.seed_record else None
    reference_bytes = reference.read_bytes() if reference else None
    if case.setup is not None:
        case.setup(tmp, monkeypatch)
    skip = (paths["res"], tmp / "cache")
    before_outside = snapshot(tmp, skip)
    before_results = snapshot(paths["res"])
    args = [str(a).format(**{k: str(v) for k, v in paths.items()}) for a in case.args]
    out = main_inprocess(*args)
    where = f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    if case.outcome == "exit2":
        assert out.returncode == 2, where
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), where
        for needle in case.needles:
            assert needle in lines[0], (needle, lines[0])
        assert snapshot(paths["res"]) == before_results, "the results dir changed on bad input"
    elif case.outcome == "failed":
        assert out.returncode == 1, where
        records = [json.loads(p.read_text()) for p in (paths["res"] / "runs").glob("*.json")]
        failed = [r for r in records if r["status"] == "failed"]
        assert failed, where
        assert any(all(n in r["reason"] for n in case.needles) for r in failed), \
            (case.needles, [r["reason"] for r in failed])
        assert not any(r["status"] == "ok" and r["run_id"] in {f["run_id"] for f in failed} for r in records)
    elif case.outcome == "ok":
        assert out.returncode == 0, where
    else:
        raise ValueError(f"unknown outcome {case.outcome!r}")
    assert snapshot(tmp, skip) == before_outside, "a file outside the results dir changed"
    if reference is not None and paths["res"].is_dir():
        assert reference.read_bytes() == reference_bytes, "a finished record changed"
    if case.check is not None:
        case.check(tmp, out)
