"""One JSON per run in `results/runs/`, and the leaderboards regenerated from them.

`leaderboard.csv` is the long format (one row per run and metric); the
aggregated view (mean, std, n, 95 % CI over seeds) and the worst case per
defense are derived from it, never edited by hand.
"""
from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bench import metrics as M
from bench.errors import BenchError
from bench.precision import RESOLVED as RESOLVED_PRECISIONS
from bench.storage import atomic_write_bytes, atomic_write_json

LONG_COLUMNS = ["run_id", "defense", "defense_params", "attacker", "attacker_params", "knowledge", "dataset",
                "target_task", "attack_task", "target_arch", "preset", "eval_split", "max_release", "seed",
                "weak_attacker", "derivable", "metric", "value"]
# `max_release` (0 = no cap) keeps a capped identity twin apart from the uncapped identity runs:
# they are scored on different test images.
GROUP = ["defense", "defense_params", "attacker", "attacker_params", "knowledge", "dataset", "target_task",
         "attack_task", "target_arch", "preset", "eval_split", "max_release"]
CONFIG = ["defense", "defense_params", "dataset", "target_task", "target_arch", "preset", "eval_split", "max_release"]


def config_label(name: str, params_json: str, registry=None) -> str:
    """`vfc(beta=0.1)`: the plugin (default: a defense) with the hyperparameters that differ from its defaults;
    a baseline with its strength always (`jpeg(quality=25)`: a bare `jpeg` would hide which strength ran)."""
    from bench.registry import DEFENSES

    registry = registry or DEFENSES
    params = json.loads(params_json) if params_json else {}
    try:
        plugin = registry.get(name)
        scales = getattr(plugin, "param_scales", {})
    except BenchError:  # a plugin no longer installed: show everything
        plugin, scales = None, {}
    shown = params if getattr(plugin, "baseline", False) else changed_params(name, params_json, registry)
    return name + ("(" + ", ".join(f"{k}={param_text(v, scales.get(k))}" for k, v in sorted(shown.items())) + ")"
                   if shown else "")


def changed_params(name: str, params_json: str, registry=None) -> dict:
    """The hyperparameters of a record that differ from the plugin's defaults (all of them if it is not installed)."""
    from bench.registry import DEFENSES

    registry = registry or DEFENSES
    params = json.loads(params_json) if params_json else {}
    try:
        defaults = registry.hparams(name)
    except BenchError:
        defaults = {}
    # Tuples are stored as JSON lists: compare in JSON form.
    return {k: v for k, v in params.items() if k not in defaults or json.dumps(defaults[k]) != json.dumps(v)}


def table_labels(pairs, registry=None) -> dict[tuple[str, str], str]:
    """{(name, params_json): label} for the configurations of one table, no two sharing a label.

    `config_label` names what differs from the plugin's defaults *today*. Two configurations can
    still read alike: a default that changed between their runs leaves one of them without the
    hyperparameter (it ran before the plugin had it), or two values round to one text. Those then
    show every hyperparameter they differ in, at full precision (`unset` where one has none), so
    one table never shows one label for two configurations.
    """
    from bench.registry import DEFENSES

    registry = registry or DEFENSES
    labels = {pair: config_label(*pair, registry) for pair in dict.fromkeys(pairs)}
    groups: dict[str, list] = {}
    for pair, label in labels.items():
        groups.setdefault(label, []).append(pair)
    for label, same in groups.items():
        if len(same) < 2:
            continue
        params = [json.loads(p) if p else {} for _, p in same]
        differ = sorted({k for p in params for k in p
                         if len({json.dumps(q.get(k), sort_keys=True) for q in params}) > 1})
        for (name, params_json), p in zip(same, params):
            shown = {**changed_params(name, params_json, registry), **{k: p.get(k) for k in differ}}
            text = ", ".join(f"{k}={'unset' if k not in p else json.dumps(v) if k in differ else param_text(v)}"
                             for k, v in sorted(shown.items()))
            labels[(name, params_json)] = f"{name}({text})"
    return labels


def recorded_params(name: str, params: dict, registry=None) -> dict:
    """A run record's hyperparameters, with any added since it was written set to the value it ran with."""
    from bench.registry import DEFENSES

    try:
        legacy = (registry or DEFENSES).get(name).legacy_defaults
    except BenchError:  # a plugin no longer installed
        legacy = {}
    return {**legacy, **params}


def setting_label(eval_split: str, max_release) -> str:
    """What else sets a configuration apart in a table or plot: tuning runs scored on val, capped releases."""
    return (" [val]" if eval_split != "test" else "") + (f" [{int(max_release)} released]" if max_release else "")


def param_text(v, scale: int | None = None) -> str:
    """A value as a person reads it: `16/255` for a multiple of 1/scale, floats to 3 significant digits."""
    if isinstance(v, (list, tuple)):
        return "+".join(param_text(x, scale) for x in v)
    if isinstance(v, float):
        if scale and abs(v * scale - round(v * scale)) < 1e-6:
            return f"{round(v * scale)}/{scale}"
        return f"{v:.3g}"
    return str(v)


def run_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / "runs" / f"{run_id}.json"


def write_run(results_dir: Path, record: dict) -> None:
    atomic_write_json(run_path(results_dir, record["run_id"]), record)


# --- reading and validating run records -------------------------------------------------------
STATUSES = ("ok", "failed", "not_applicable")
# Flags every long-table row carries: an attacker too weak to calibrate, a private task derivable from
# the designated one. Either keeps a row out of the worst case.
BOOL_FLAGS = ("weak_attacker", "derivable")
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
    from bench.runspec import RunSpec

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
    for k in ("knowledge", "reason"):
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


def seed_key(spec: dict) -> tuple:
    """What the leaderboard counts once: the configuration (GROUP but `knowledge`, which comes from the
    attacker, not the spec) and the seed. Hyperparameters are taken as recorded (`recorded_params`)."""
    row = _spec_columns(spec)
    return tuple(row[c] for c in GROUP if c != "knowledge") + (row["seed"],)


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
        key = (spec["dataset"], json.dumps(spec.get("dataset_params", {}), sort_keys=True))
        j = seen.setdefault(key, i)
        if runs[j]["dataset_digest"] != version:
            raise BenchError(f"{names[j]} and {names[i]} were computed on two versions of dataset {spec['dataset']} "
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


def _spec_columns(s: dict) -> dict:
    from bench.registry import ATTACKERS

    return {"defense": s["defense"],
            "defense_params": json.dumps(recorded_params(s["defense"], s["defense_params"]), sort_keys=True),
            "attacker": s["attacker"],
            "attacker_params": json.dumps(recorded_params(s["attacker"], s["attacker_params"], ATTACKERS),
                                          sort_keys=True),
            "eval_split": s.get("eval_split", "test"), "max_release": int(s.get("max_release") or 0),
            "dataset": s["dataset"], "target_task": s["target_task"], "attack_task": s["attack_task"],
            "target_arch": s["target_arch"], "preset": s["preset"], "seed": s["seed"]}


def long_table(runs: list[dict]) -> pd.DataFrame:
    """One row per `ok` run and metric; two runs that are one seed of one configuration, or runs on two
    versions of one dataset, are refused."""
    check_one_record_per_seed(runs)
    check_one_data_version(runs)
    rows = []
    for r in runs:
        if r["status"] != "ok":
            continue
        base = {"run_id": r["run_id"], **_spec_columns(r["spec"]), "knowledge": r.get("knowledge", ""),
                **{f: bool(r.get("flags", {}).get(f, False)) for f in BOOL_FLAGS}}
        rows += [{**base, "metric": k, "value": float(v)} for k, v in sorted(r["metrics"].items())]
    df = pd.DataFrame(rows, columns=LONG_COLUMNS)
    return df.sort_values(["dataset", "defense", "defense_params", "attacker", "seed", "metric"], kind="stable",
                          ignore_index=True)


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n and 95 % CI over seeds for every (configuration, attacker, metric)."""
    if long.empty:
        return pd.DataFrame(columns=GROUP + [*BOOL_FLAGS, "metric", "mean", "std", "n", "ci95_low", "ci95_high"])
    _check_seeds_counted_once(long)
    rows = []
    for key, g in long.groupby(GROUP + ["metric"], sort=True, dropna=False):
        v = g["value"].to_numpy()
        lo, hi = M.ci95(v)
        rows.append({**dict(zip(GROUP + ["metric"], key)), **{f: bool(g[f].any()) for f in BOOL_FLAGS},
                     "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
                     "ci95_low": lo, "ci95_high": hi})
    return pd.DataFrame(rows)


def worst_case(agg: pd.DataFrame) -> pd.DataFrame:
    """Per defense configuration: utility and the worst leakage over calibrated attackers.

    A defense is ranked by its worst case; attackers flagged weak do not count, nor do private
    tasks flagged derivable (a function of the designated task: no release that keeps utility
    can hide them), and a configuration with no other attacker gets no rank.
    """
    cols = CONFIG + ["utility_acc", "agreement", "worst_leakage", "worst_ci95_low", "worst_ci95_high",
                     "worst_attacker", "n_attackers", "n_seeds"]
    if agg.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in agg.groupby(CONFIG, sort=True):
        util = g[g.metric == "utility_acc"]["mean"]
        agree = g[g.metric == "agreement"]["mean"]
        leaks = g[(g.metric == "leakage") & ~g.weak_attacker & ~g.derivable]
        row = dict(zip(CONFIG, key), utility_acc=float(util.mean()) if len(util) else float("nan"),
                   agreement=float(agree.mean()) if len(agree) else float("nan"),
                   n_attackers=int(leaks.attacker.nunique()), n_seeds=int(g["n"].max()))
        if len(leaks):
            worst = leaks.loc[leaks["mean"].idxmax()]
            row.update(worst_leakage=worst["mean"], worst_ci95_low=worst["ci95_low"],
                       worst_ci95_high=worst["ci95_high"], worst_attacker=f"{worst.attacker}[{worst.attack_task}]")
        rows.append(row)
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["dataset", "worst_leakage"], na_position="last", ignore_index=True)


def _check_seeds_counted_once(long: pd.DataFrame, where: str = "") -> None:
    """n is a number of seeds: refuse a long table holding one (configuration, seed, metric) twice."""
    dup = long[long.duplicated(GROUP + ["seed", "metric"], keep=False)]
    if len(dup):
        key = dup.groupby(GROUP + ["seed", "metric"], sort=False, dropna=False).ngroup()
        same = dup[key == key.iloc[0]]
        first = same.iloc[0]
        ids = ", ".join(dict.fromkeys(map(str, same["run_id"])))
        raise BenchError(f"{where}runs {ids} are all seed {first['seed']} of one configuration ({first['defense']} x "
                         f"{first['attacker']} on {first['dataset']}[{first['attack_task']}], metric "
                         f"{first['metric']}): n counts seeds, so each may appear once")


def leaderboards(results_dir: Path, runs: list[dict] | None = None, floor: float | None = None) -> dict[str, pd.DataFrame]:
    """The four leaderboards (long, agg, worst, headline) of a results dir, computed, not written.

    `runs`: the records of `results_dir` if already loaded (`load_runs`), else they are loaded here;
    `floor`: the headline's utility floor (default `headline.FLOOR`).
    """
    from bench.headline import FLOOR, headline

    runs = load_runs(Path(results_dir)) if runs is None else runs
    long = long_table(runs)
    agg = aggregate(long)
    worst = worst_case(agg)
    top = headline(worst, agg, runs, FLOOR if floor is None else floor)
    return {"long": long, "agg": agg, "worst": worst, "headline": top}


LEADERBOARD_FILES = {"long": "leaderboard.csv", "agg": "leaderboard_agg.csv", "worst": "leaderboard_worst.csv",
                     "headline": "leaderboard_headline.csv"}


def write_leaderboards(results_dir: Path, runs: list[dict] | None = None, floor: float | None = None) -> dict[str, pd.DataFrame]:
    """Regenerate the leaderboard CSVs of `results_dir` from its records (see `leaderboards`)."""
    tables = leaderboards(results_dir, runs, floor)
    for kind, name in LEADERBOARD_FILES.items():
        csv = spreadsheet_safe(tables[kind]).to_csv(index=False, float_format="%.6g")
        atomic_write_bytes(Path(results_dir) / name, csv.encode())
    return tables


# A text cell starting with one of these is a formula to a spreadsheet (names come from users: task
# columns, class names, plugin labels): it is written behind a `'`, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell that a spreadsheet would evaluate written behind a `'`."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c]):
            out[c] = out[c].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v)
    return out


def from_spreadsheet_safe(values: pd.Series) -> pd.Series:
    """The text `spreadsheet_safe` guarded, as it was."""
    return values.map(lambda v: v[1:] if isinstance(v, str) and v[:1] == "'" and v[1:].startswith(FORMULA_STARTS)
                      else v)


# Columns of a long leaderboard that hold text (compared as text when two leaderboards are merged).
TEXT_COLUMNS = ["run_id", "defense", "defense_params", "attacker", "attacker_params", "knowledge", "dataset",
                "target_task", "attack_task", "target_arch", "preset", "eval_split", "metric"]


def read_long(path: Path) -> pd.DataFrame:
    """A long-format leaderboard (`leaderboard.csv`) from `path`, checked, or one BenchError naming it.

    Refused: a missing file, a directory or other non-file, an empty file, bytes that are not
    UTF-8 CSV, a CSV without the long columns, a `value` that is not a finite number (text,
    including numbers written as text such as '0.9' or 0,9, booleans, empty cells), a `seed` or
    `max_release` that is not an integer, and one (configuration, seed, metric) on two rows
    (n counts seeds). A number in CSV double quotes ("0.9") is still a number: CSV has no types.
    """
    path = Path(path)
    if not path.exists():
        raise BenchError(f"no leaderboard at {path}")
    if path.is_dir():
        raise BenchError(f"{path} is a directory, not a leaderboard CSV (e.g. results/leaderboard.csv)")
    if not path.is_file():
        raise BenchError(f"{path} is not a regular file, not a leaderboard CSV")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise BenchError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BenchError(f"{path} is not a leaderboard CSV: not UTF-8 text (byte {e.start})") from None
    if "\x00" in text:
        raise BenchError(f"{path} is not a leaderboard CSV: binary data (NUL bytes)")
    if not text.strip():
        raise BenchError(f"{path} is empty, not a leaderboard CSV")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a ParserWarning on garbage must not add lines to the one error
            df = pd.read_csv(io.StringIO(text), dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                             na_values={"value": [""], "seed": [""], "max_release": [""]})
    except pd.errors.EmptyDataError:
        raise BenchError(f"{path} is empty, not a leaderboard CSV") from None
    except (pd.errors.ParserError, ValueError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BenchError(f"{path} is not a readable CSV: {reason}") from None
    for c in set(TEXT_COLUMNS) & set(df.columns):
        df[c] = from_spreadsheet_safe(df[c])
    if "max_release" not in df.columns:  # written before release caps existed: none was capped
        df["max_release"] = 0
    if "derivable" not in df.columns:  # written before derivability was measured: nothing was flagged
        df["derivable"] = False
    missing = set(LONG_COLUMNS) - set(df.columns)
    if missing:
        raise BenchError(f"{path} is not a long-format leaderboard: missing columns {sorted(missing)}")
    df["value"] = _numbers(df, "value", path, kind="a finite number")
    df["seed"] = _numbers(df, "seed", path, kind="a non-negative integer", integer=True)
    df["max_release"] = _numbers(df, "max_release", path, kind="a non-negative integer", integer=True)
    for flag in BOOL_FLAGS:
        if df[flag].dtype == bool:
            continue
        flags = df[flag].astype(str).str.strip()
        bad = ~flags.isin(["True", "False"])
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise BenchError(f"{path} row {i + 1}: {flag} is {flags.iloc[i]!r}, not True or False")
        df[flag] = flags == "True"
    for c in TEXT_COLUMNS:
        df[c] = df[c].astype(str)
    _check_seeds_counted_once(df, f"{path}: ")
    return df


def _numbers(df: pd.DataFrame, column: str, path: Path, kind: str, integer: bool = False) -> pd.Series:
    """`df[column]` as numbers, or a BenchError naming the file, the row and the bad cell."""
    raw = df[column]
    if pd.api.types.is_bool_dtype(raw):
        values = np.zeros(len(raw))
        bad = np.ones(len(raw), dtype=bool)
    else:
        # Text anywhere in the column (a number written as '0.9', 0,9, "high", True): that cell is bad.
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan) \
            if not pd.api.types.is_numeric_dtype(raw) else raw.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if integer:
            bad |= (np.nan_to_num(values) != np.round(np.nan_to_num(values))) | (np.nan_to_num(values) < 0)
    if bad.any():
        i = int(bad.argmax())
        cell = raw.iloc[i]
        if isinstance(cell, str):
            shown = repr(cell) if cell else "empty"
        else:
            shown = "empty" if cell is None or cell != cell else str(cell)
        raise BenchError(f"{path} row {i + 1}: {column} is {shown}, not {kind}")
    return pd.Series(values.astype(int) if integer else values, index=raw.index)


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, cell and metric of two long tables: the two means, CIs, difference, `significant`.

    The table of `bench compare A.csv B.csv`, which lives in `bench.compare` (with the cells on one
    side only and those on different data); kept here for callers of the table alone.
    """
    from bench.compare import compare_sides

    return compare_sides(a, b, same_configuration=True).matched
