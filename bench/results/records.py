"""One JSON per run in `runs/`: where a record lives, how it is written, read and validated.

Everything that reads results goes through `read_run`/`load_runs`, so every table, plot and
resume decision sees only records that passed `validate_record`, and never one seed twice.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench.data.folder import DATA_NAME
from bench.errors import BenchError
from bench.precision import RESOLVED as RESOLVED_PRECISIONS
from bench.results.keys import BOOL_FLAGS, seed_key
from bench.runspec import RunSpec
from bench.storage import atomic_write_json


def repository_reference() -> Path | None:
    """The repository's reference results, when the harness runs from a checkout that has them."""
    path = Path(__file__).resolve().parents[2] / "results" / "reference"
    return path if (path / "runs").is_dir() else None


def run_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / "runs" / f"{run_id}.json"


def write_run(results_dir: Path, record: dict) -> None:
    atomic_write_json(run_path(results_dir, record["run_id"]), record)


# --- reading and validating run records -------------------------------------------------------
STATUSES = ("ok", "failed", "not_applicable")
# RunSpec fields every record's spec holds (`RunSpec.to_dict` always writes them), and those it may leave out.
SPEC_TEXT = ("defense", "attacker", "dataset", "target_task", "attack_task", "target_arch", "preset")
SPEC_PARAMS = ("defense_params", "attacker_params", "dataset_params")
SPEC_OPTIONAL = ("eval_split", "max_release")
_FIX = "move it out of the runs/ directory or delete it"
# The plugins whose code a record names (`code_digests`, bench.code_digest), beside the harness's.
CODE_KINDS = ("defense", "attacker", "dataset")


def read_run(results_dir: Path, run_id: str) -> dict | None:
    """The validated record of run `run_id`, or None when there is none (see `read_record`)."""
    path = run_path(results_dir, run_id)
    if not path.exists() and not path.is_symlink():
        return None
    return read_record(path)


def read_record(path: Path) -> dict:
    """The run record in the file `path` (in some `runs/` directory), validated by `validate_record`.

    Anything that is not a readable regular file inside `runs/` is refused with one BenchError
    naming it: a directory or special file named `x.json`, a symlink that dangles or points
    outside `runs/` (a record must not pull numbers in from elsewhere, and a rerun would replace
    the link, not what it points to), a file that cannot be read, is not UTF-8 or not JSON.
    """
    path = Path(path)
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
            inside = path.parent.resolve(strict=True) in target.parents
        except (OSError, RuntimeError):  # dangling, or a loop
            raise BenchError(f"corrupt result file {path}: a symlink to {_link(path)}, which does not exist "
                             f"(or loops); {_FIX}") from None
        if not inside:
            raise BenchError(f"corrupt result file {path}: a symlink to {target}, outside {path.parent}; a run "
                             f"record must live in runs/ itself: {_FIX}")
    if path.is_dir():
        raise BenchError(f"corrupt result file {path}: a directory, not a run record; {_FIX}")
    if not path.is_file():
        raise BenchError(f"corrupt result file {path}: not a regular file; {_FIX}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BenchError(f"cannot read result file {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BenchError(f"corrupt result file {path}: not UTF-8 text (byte {e.start}); {_FIX}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchError(f"corrupt result file {path}: {e}; {_FIX}") from None
    except RecursionError:
        raise BenchError(f"corrupt result file {path}: JSON nested too deeply; {_FIX}") from None
    return validate_record(record, path)


def validate_record(record, path: Path) -> dict:
    """`record` if it is a well-formed run record stored under its own name, else one BenchError naming `path`.

    The one place a record is checked: `read_run` and `load_runs` (and so the runner, which
    loads every record before any work, the leaderboards and the plots) only ever see records
    that passed here. Checked, in this order: the keys the harness reads and their types
    (`status` one of STATUSES, `metrics` a dict of finite numbers - no strings, no booleans,
    no NaN -, a `spec` with exactly the RunSpec fields, text where text belongs, `seed` a
    non-negative int, optional `flags`/`knowledge`/`reason` of the right type); then identity:

    - the spec must hash to the `run_id` (`RunSpec.from_dict(spec).run_id`). The run_id is the
      content address of the spec: a record whose spec no longer hashes to it was edited by
      hand (or written by another SCHEMA), so its numbers are no longer known to belong to that
      spec, and two such records could describe one run under two ids;
    - the file must be named `<run_id>.json`. The runner finds a run's record by that name
      (resume skips it, a defended run reads its identity twin's): a record under another name
      is invisible to resume, which would run it again and store the same run twice, while the
      leaderboard would count both. A second file holding a run_id that has its own correctly
      named file is reported as a duplicate, naming both files.

    Neither is repaired silently: which of two disagreeing things is right (the name or the
    content, the spec or the numbers) cannot be known, so the message says what to rename or
    delete. Together the two rules make "one file per run" a filesystem invariant, so `load_runs`
    never returns one run twice; `check_one_record_per_seed` then covers distinct runs that the
    leaderboard would still count as one configuration and seed.
    """

    path = Path(path)

    def bad(problem: str) -> BenchError:
        return BenchError(f"corrupt result file {path}: {problem}; {_FIX}")

    if not isinstance(record, dict):
        raise bad(f"not a run record (a JSON {_json_kind(record)}, not an object with run_id, status, spec, metrics)")
    missing = [k for k in ("run_id", "status", "spec", "metrics") if k not in record]
    if missing:
        raise bad(f"not a run record (missing {', '.join(missing)})")
    run_id, status, spec, metrics = record["run_id"], record["status"], record["spec"], record["metrics"]
    if not isinstance(run_id, str) or not run_id:
        raise bad(f"run_id is {_show(run_id)}, not a run id")
    if status not in STATUSES:
        raise bad(f"status is {_show(status)}; valid: {', '.join(STATUSES)}")
    if not isinstance(metrics, dict):
        raise bad(f"metrics is a JSON {_json_kind(metrics)}, not an object of metric name -> number")
    for name, value in metrics.items():
        if not _is_number(value):
            raise bad(f"metric {name!r} is {_show(value)}, not a number")
        if not _finite(value):
            raise bad(f"metric {name!r} is {_show(value)}, not a finite number")
    if not isinstance(spec, dict):
        raise bad(f"spec is a JSON {_json_kind(spec)}, not an object")
    known = set(SPEC_TEXT + SPEC_PARAMS + SPEC_OPTIONAL + ("seed",))
    unknown_keys = sorted(set(spec) - known)
    if unknown_keys:
        raise bad(f"spec has unknown key(s) {', '.join(unknown_keys)}")
    missing = [k for k in SPEC_TEXT + ("seed",) + SPEC_PARAMS if k not in spec]
    if missing:
        raise bad(f"spec is missing {', '.join(missing)}")
    for k in SPEC_TEXT:
        if not isinstance(spec[k], str) or not spec[k]:
            raise bad(f"spec.{k} is {_show(spec[k])}, not a name")
    for k in SPEC_PARAMS:
        if not isinstance(spec[k], dict):
            raise bad(f"spec.{k} is {_show(spec[k])}, not an object")
    if not isinstance(spec["seed"], int) or isinstance(spec["seed"], bool) or spec["seed"] < 0:
        raise bad(f"spec.seed is {_show(spec['seed'])}, not a non-negative integer")
    if spec.get("eval_split", "test") not in ("test", "val"):
        raise bad(f"spec.eval_split is {_show(spec['eval_split'])}; valid: test, val")
    cap = spec.get("max_release")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise bad(f"spec.max_release is {_show(cap)}, not a positive integer")
    flags = record.get("flags", {})
    if not isinstance(flags, dict) or not all(isinstance(flags.get(k, False), bool) for k in BOOL_FLAGS):
        raise bad(f"flags is {_show(flags)}, not an object with boolean {' and '.join(BOOL_FLAGS)}")
    for k in ("knowledge", "reason", "cpu"):
        if k in record and not isinstance(record[k], str):
            raise bad(f"{k} is {_show(record[k])}, not text")
    for k in ("data_digest", "dataset_digest"):   # null: not known (a record of a run that never reached its data)
        if record.get(k) is not None and not (isinstance(record[k], str) and record[k]):
            raise bad(f"{k} is {_show(record[k])}, not a digest")
    code = record.get("code_digests")   # absent: written before records named the code that made them
    if code is not None:
        ok = isinstance(code, dict) and all(isinstance(v, str) and v or v is None for v in code.values())
        if not ok or not set(CODE_KINDS) <= set(code):
            raise bad(f"code_digests is {_show(code)}, not an object of {', '.join(CODE_KINDS)} -> digest or null")
    defaults = record.get("defaults")   # absent: written before records named the defaults they ran under
    if defaults is not None and not (isinstance(defaults, dict)
                                     and all(isinstance(defaults.get(k), dict) for k in ("defense", "attacker"))):
        raise bad(f"defaults is {_show(defaults)}, not an object of defense and attacker objects")
    # It becomes part of a table's dataset label, a plot's title and file name: plain characters only.
    if "data_name" in record and not (isinstance(record["data_name"], str) and DATA_NAME.fullmatch(record["data_name"])):
        raise bad(f"data_name is {_show(record['data_name'])}, not a directory name of letters, digits, `.`, `_`, "
                  "`-` (at most 64)")
    if "precision" in record and record["precision"] not in RESOLVED_PRECISIONS:
        raise bad(f"precision is {_show(record['precision'])}; valid: {', '.join(RESOLVED_PRECISIONS)}")
    expected = RunSpec.from_dict(spec).run_id
    if expected != run_id:
        raise bad(f"its spec hashes to run_id {expected}, not the recorded {run_id} (the spec or the "
                  "run_id was edited, or another version of the harness wrote it)")
    if path.name != f"{run_id}.json":
        own = path.parent / f"{run_id}.json"
        if own.exists():
            raise BenchError(f"duplicate result files: {path} holds run {run_id}, which {own} holds too; a run has "
                             f"one record, named after its run_id: delete {path}")
        raise BenchError(f"misnamed result file {path}: it holds run {run_id}, and a record must be named after its "
                         f"run_id: rename it to {run_id}.json (or delete it)")
    return record


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float: JSON allows it, an aggregate does not
        return False


def _json_kind(v) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number")


def _show(v) -> str:
    """A value in an error message: short, one line, with its JSON kind when that is the problem."""
    text = json.dumps(v, default=str)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} (a JSON {_json_kind(v)})" if not isinstance(v, dict) else text


def _link(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return "?"


def load_runs(results_dir: Path) -> list[dict]:
    """Every record in `results_dir/runs/*.json`, each validated (`read_record`), in file-name order.

    Raises one BenchError on the first bad file (in name order), or when two records would count
    one seed of a configuration twice (`check_one_record_per_seed`).
    """
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        return []
    try:
        # Not glob(): every directory entry named *.json, dangling symlinks included, is looked at.
        paths = sorted(p for p in runs_dir.iterdir() if p.name.endswith(".json"))
    except OSError as e:
        raise BenchError(f"cannot list {runs_dir}: {e.strerror or e}") from None
    runs = [read_record(p) for p in paths]
    check_one_record_per_seed(runs, [str(p) for p in paths])
    return runs


def check_one_record_per_seed(runs: list[dict], names: list[str] | None = None,
                              remedy: str = "move one of them out of runs/") -> None:
    """Raise a BenchError when two `ok` records are the same seed of one leaderboard configuration.

    Distinct run_ids can still be one row of the leaderboard: the spec holds things the
    leaderboard does not tell apart (`dataset_params`), and a record written before a
    hyperparameter existed reads as its legacy value, equal to a newer record that sets it.
    Counting both would make n count files, not seeds (and the CI narrower than it is), so
    both are named and one must go. `names`: how to call each run in the message (its file).
    """
    names = names or [str(r.get("run_id")) for r in runs]
    seen: dict[tuple, int] = {}
    for i, r in enumerate(runs):
        if r.get("status") != "ok":
            continue
        j = seen.setdefault(seed_key(r["spec"]), i)
        if j != i:
            a, b = runs[j]["spec"], r["spec"]
            differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise BenchError(f"{names[j]} and {names[i]} are both seed {b['seed']} of one configuration "
                             f"({b['defense']} x {b['attacker']} on {b['dataset']}[{b['attack_task']}]; their "
                             f"specs differ only in {', '.join(differ) or 'nothing'}, which the leaderboard does "
                             f"not tell apart): it would count that seed twice; {remedy}")


def check_one_data_version(runs: list[dict], names: list[str] | None = None,
                           remedy: str = "move the records of one version out of runs/") -> None:
    """Raise a BenchError when `ok` records of one dataset (name and options) were computed on two versions
    of its content (their `dataset_digest`s differ): a leaderboard cell, a headline ranking or a comparison
    would put numbers of two datasets side by side, or average them. Records written before the digest
    was recorded carry none and are not counted against any version."""
    names = names or [f"runs/{r.get('run_id')}.json" for r in runs]
    seen: dict[tuple, int] = {}
    for i, r in enumerate(runs):
        version = r.get("dataset_digest")
        if r.get("status") != "ok" or version is None:
            continue
        spec = r["spec"]
        # Two directories of a `folder` dataset are two datasets (their labels differ); one directory
        # edited between runs is two versions of one.
        key = (spec["dataset"], r.get("data_name"), json.dumps(spec.get("dataset_params", {}), sort_keys=True))
        j = seen.setdefault(key, i)
        if runs[j]["dataset_digest"] != version:
            named = f" '{r['data_name']}'" if r.get("data_name") else ""
            raise BenchError(f"{names[j]} and {names[i]} were computed on two versions of dataset {spec['dataset']}{named} "
                             f"(dataset digest {runs[j]['dataset_digest'][:12]} and {version[:12]}): no table "
                             f"mixes them; {remedy}")


def check_planned(runs: list[dict], specs, results_dir: Path | None = None) -> None:
    """Refuse, before any work, planned runs that would become a second record of one seed.

    `runs`: the records already in the results dir (`load_runs`); `specs`: the RunSpecs about to
    run. A planned run whose run_id is already recorded is the same run (skipped or retried),
    not a second one; a planned run with another run_id that the leaderboard would count as a
    recorded (or another planned) run's configuration and seed is refused, naming both.
    """
    recorded = {r["run_id"] for r in runs}
    planned = {s.run_id: s for s in specs if s.run_id not in recorded}
    where = (lambda r: str(run_path(results_dir, r["run_id"]))) if results_dir is not None else (
        lambda r: f"run {r['run_id']}")
    names = [where(r) for r in runs] + [f"the planned run {s.label()}" for s in planned.values()]
    check_one_record_per_seed(runs + [{"run_id": i, "spec": s.to_dict(), "status": "ok"} for i, s in planned.items()],
                              names, remedy="use another --results-dir, or move the recorded run out of runs/")
