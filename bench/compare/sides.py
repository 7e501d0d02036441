"""The two sides of a comparison: a leaderboard CSV or a results dir read as a long table with the
data digest of each run, narrowed to a dataset or to one configuration (`--a`/`--b`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.compare.cells import rows_where
from bench.errors import BenchError
from bench.params import changed_params, labels_of, param_text, setting_label
from bench.registry import DEFENSES
from bench.results.leaderboards import read_long
from bench.results.records import load_runs, read_run, run_path
from bench.results.tables import long_table

# What `--a`/`--b` choose from, per dataset: a configuration as the leaderboard labels it.
SELECTABLE = ["dataset", "defense", "defense_params", "eval_split", "max_release"]


@dataclass(frozen=True)
class Side:
    name: str            # how the report calls it: the file or directory it was read from
    long: pd.DataFrame   # a long table (results.LONG_COLUMNS) plus `data_digest`: None where no record says
    code: dict = field(default_factory=dict)   # run_id -> digest of its defense's code, where a record says


def read_leaderboard(path: Path) -> Side:
    """A leaderboard CSV (`read_long`), with the data digests of the records beside it in `runs/`."""
    path = Path(path)
    long = read_long(path)
    records = _records_beside(path, set(long["run_id"]))
    digests = {i: _digest_of(r, run_path(path.parent, i)) for i, r in records.items()}
    return Side(str(path), long.assign(data_digest=[digests.get(i) for i in long["run_id"]]), _code_of(records))


def _code_of(records: dict[str, dict]) -> dict[str, str]:
    """run_id -> the digest of its defense's code, for the records that name it."""
    return {i: r["code_digests"]["defense"] for i, r in records.items()
            if (r.get("code_digests") or {}).get("defense")}


def _records_beside(path: Path, run_ids: set[str]) -> dict[str, dict]:
    """run_id -> record, for the runs of `run_ids` recorded in the `runs/` directory beside `path`."""
    results_dir = path.parent
    runs_dir = results_dir / "runs"
    if not runs_dir.is_dir():
        return {}
    try:
        # Only names listed there are read: a run_id from the CSV never becomes a path of its own.
        present = {p.name for p in runs_dir.iterdir()}
    except OSError as e:
        raise BenchError(f"cannot list {runs_dir}: {e.strerror or e}") from None
    return {i: read_run(results_dir, i) for i in sorted(run_ids) if f"{i}.json" in present}


def read_results_dir(results_dir: Path) -> Side:
    """The runs recorded in `results_dir/runs` as a long table, with the data digest of each."""
    results_dir = Path(results_dir)
    if not (results_dir / "runs").is_dir():
        raise BenchError(f"no runs in {results_dir}/runs; run `python -m bench run` first, or give leaderboard CSVs")
    runs = load_runs(results_dir)
    digests = {r["run_id"]: _digest_of(r, run_path(results_dir, r["run_id"])) for r in runs}
    long = long_table(runs)
    return Side(str(results_dir), long.assign(data_digest=[digests[i] for i in long["run_id"]]),
                _code_of({r["run_id"]: r for r in runs}))


def _digest_of(record: dict, path: Path) -> str | None:
    digest = record.get("data_digest")
    if digest is not None and not isinstance(digest, str):
        raise BenchError(f"corrupt result file {path}: data_digest is {digest!r}, not a sha256 digest; "
                         "move it out of the runs/ directory or delete it")
    return digest


def only_dataset(side: Side, dataset: str) -> Side:
    """The runs on `dataset`: a label as the leaderboard prints it, or a plain name, which takes every
    directory of that dataset (`folder` is `folder:faces@1a2b3c4d` and `folder:cats@...`)."""
    return Side(side.name, side.long[side.long["dataset"].map(lambda d: of_dataset(d, dataset))], side.code)


def of_dataset(label: str, dataset: str) -> bool:
    return label == dataset or label.startswith(f"{dataset}:")


@dataclass(frozen=True)
class Selection:
    """What `--a`/`--b` ask for: a defense, and optionally some of its hyperparameters and its setting."""
    text: str
    option: str                    # `--a` or `--b`, for messages
    defense: str
    params: dict[str, str] | None  # None: any configuration (a bare name); {}: the defaults (`name()`)
    setting: str | None            # setting_label without blanks, e.g. `[500released]`; None: any


_SELECTION = re.compile(r"\s*([^\s()\[\]]+)\s*(?:\((.*)\))?\s*((?:\[[^\]]*\]\s*)*)")
EXAMPLES = "e.g. fmd, fmd(lam=0.03), vfc() for its defaults, identity [500 released]"


def parse_selection(text: str, option: str) -> Selection:
    """`name`, `name()`, `name(param=value, ...)`, each optionally followed by a setting such as `[val]`."""
    match = _SELECTION.fullmatch(text)
    if match is None:
        raise BenchError(f"{option} {text!r} is no defense or configuration label ({EXAMPLES})")
    name, inside, setting = match.groups()
    params = None
    if inside is not None:
        params = {}
        for part in filter(None, (p.strip() for p in inside.split(","))):
            key, eq, value = (s.strip() for s in part.partition("="))
            if not (eq and key and value):
                raise BenchError(f"{option} {text!r}: {part!r} is not param=value ({EXAMPLES})")
            params[key] = value
    return Selection(text, option, name, params, _squash(setting) or None)


def _squash(text: str) -> str:
    """`text` without blanks: a label typed `fmd(lam=0.03,label_source=gt)` is the one printed with spaces."""
    return "".join(text.split())


def configurations(long: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, each configuration of `long` (SELECTABLE), its `label` and the `selector` that picks it alone.

    The label is the leaderboard's (config_label and setting_label); a configuration with every
    hyperparameter at its default is selected alone by `name()`, as the bare name means all of them.
    """
    configs = long[SELECTABLE].drop_duplicates().sort_values(SELECTABLE, ignore_index=True)
    unique = labels_of(long)
    labels = [unique[d, p] + setting_label(e, m)
              for d, p, e, m in zip(configs.defense, configs.defense_params, configs.eval_split, configs.max_release)]
    selectors = [label if label != d else f"{d}()" for label, d in zip(labels, configs.defense)]
    return configs.assign(label=labels, selector=selectors)


def select(side: Side, selection: Selection) -> Side:
    """`side` narrowed to the configuration `selection` names on each dataset, or a BenchError listing the choices.

    On a dataset where several configurations match, one whose selector is exactly the text
    given is taken; otherwise the selection is ambiguous there and the error lists the matches.
    """
    configs = configurations(side.long)
    hits = rows_where(configs, [_matches(selection, row) for row in configs.itertuples(index=False)])
    if hits.empty:
        raise _no_match(side, selection, configs)
    chosen = []
    for dataset, found in hits.groupby("dataset", sort=True):
        if len(found) > 1:
            exact = found[found.selector.map(_squash) == _squash(selection.text)]
            if len(exact) != 1:
                other_datasets = configs.dataset.nunique() > 1
                raise BenchError(f"{selection.option} {selection.text!r} matches {len(found)} configurations on "
                                 f"{dataset} in {side.name}; give one of these labels: {'; '.join(found.selector)}"
                                 + (" (or leave other datasets out with --dataset)" if other_datasets else ""))
            found = exact
        chosen.append(found)
    wanted = set(pd.concat(chosen)[SELECTABLE].itertuples(index=False, name=None))
    keep = [key in wanted for key in side.long[SELECTABLE].itertuples(index=False, name=None)]
    return Side(side.name, rows_where(side.long, keep), side.code)


def _matches(selection: Selection, config) -> bool:
    if config.defense != selection.defense:
        return False
    if selection.setting is not None and _squash(setting_label(config.eval_split, config.max_release)) \
            != selection.setting:
        return False
    if selection.params is None:
        return True
    if not selection.params:  # `name()`: every hyperparameter at its default
        return not changed_params(config.defense, config.defense_params)
    params = json.loads(config.defense_params) if config.defense_params else {}
    scales = _param_scales(config.defense)
    return all(k in params and _same_value(params[k], v, scales.get(k)) for k, v in selection.params.items())


def _param_scales(defense: str) -> dict:
    try:
        return getattr(DEFENSES.get(defense), "param_scales", {})
    except BenchError:  # a plugin no longer installed: its values are matched as written
        return {}


def _same_value(value, text: str, scale: int | None) -> bool:
    """Whether `text` (as typed, or as a label prints it: `16/255`, `0.0314`, `cnn+resnet`) is `value`."""
    if text in (param_text(value, scale), str(value), json.dumps(value)):
        return True
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        number = _number(text)
        return number is not None and math.isclose(value, number, rel_tol=1e-9, abs_tol=1e-12)
    return False


def _number(text: str) -> float | None:
    """`text` as a number (`0.03`, `8/255`), or None when it is none: then it is compared as text only."""
    numerator, slash, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(numerator)
    except (ValueError, ZeroDivisionError):
        return None


def _no_match(side: Side, selection: Selection, configs: pd.DataFrame) -> BenchError:
    own = configs[configs.defense == selection.defense]
    where = f"{selection.option} {selection.text!r} matches no configuration in {side.name}"
    if own.empty:
        defenses = ", ".join(sorted(set(configs.defense))) or "(none)"
        return BenchError(f"{where}: no run of defense {selection.defense!r}; valid choices: {defenses} "
                          f"(or a configuration label, {EXAMPLES})")
    known = set().union(*(json.loads(p or "{}") for p in own.defense_params))
    unknown = sorted(set(selection.params or {}) - known)
    if unknown:
        where += (f" ({selection.defense} has no hyperparameter {', '.join(unknown)}; "
                  f"its hyperparameters: {', '.join(sorted(known))})")
    return BenchError(f"{where}; valid choices: {'; '.join(dict.fromkeys(own.selector))}")
