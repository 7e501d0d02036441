"""The leaderboard CSVs of a results dir, regenerated from its records, and read back checked.

`leaderboard.csv` is the long format (one row per run and metric); `_agg`, `_worst`, `_label_cost`
and `_headline` are derived from it (`bench.results.tables`, `.label_cost`, `.headline`).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.params import table_labels
from bench.registry import ATTACKERS, DEFENSES
from bench.results.borrowed import borrowed_baselines
from bench.results.headline import FLOOR, headline
from bench.results.keys import BOOL_FLAGS, LABEL_COLUMNS, LONG_COLUMNS
from bench.results.label_cost import label_costs
from bench.results.records import load_runs, repository_reference
from bench.results.tables import aggregate, check_seeds_counted_once, long_table, worst_case
from bench.storage import atomic_write_bytes

# `reference` of `leaderboards`: the repository's reference results, wherever the harness runs from.
REPOSITORY = "repository"


def leaderboards(results_dir: Path, runs: list[dict] | None = None, floor: float | None = None,
                 reference: Path | str | None = REPOSITORY) -> dict[str, pd.DataFrame]:
    """The leaderboards (long, agg, worst, label_cost, headline) of a results dir, computed, not written.

    `runs`: the records of `results_dir` if already loaded (`load_runs`), else they are loaded here;
    `floor`: the headline's utility floor (default `headline.FLOOR`); `reference`: the results dir whose
    baselines stand in where `results_dir` has none on the same data (`bench.results.borrowed`; None: none).
    """
    runs = load_runs(Path(results_dir)) if runs is None else runs
    long = long_table(runs)
    agg = aggregate(long)
    worst = worst_case(agg)
    costs = label_costs(long)
    reference = repository_reference() if reference == REPOSITORY else reference
    top = headline(worst, agg, runs, FLOOR if floor is None else floor,
                   borrowed_baselines(runs, Path(results_dir), reference), costs)
    return {"long": long, "agg": agg, "worst": worst, "label_cost": costs, "headline": top}


LEADERBOARD_FILES = {"long": "leaderboard.csv", "agg": "leaderboard_agg.csv", "worst": "leaderboard_worst.csv",
                     "label_cost": "leaderboard_label_cost.csv", "headline": "leaderboard_headline.csv"}


def write_leaderboards(results_dir: Path, runs: list[dict] | None = None, floor: float | None = None,
                       reference: Path | str | None = REPOSITORY) -> dict[str, pd.DataFrame]:
    """Regenerate the leaderboard CSVs of `results_dir` from its records (see `leaderboards`)."""
    tables = leaderboards(results_dir, runs, floor, reference)
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
TEXT_COLUMNS = ["run_id", "defense", "defense_params", "defense_label", "attacker", "attacker_params",
                "attacker_label", "knowledge", "dataset", "target_task", "attack_task", "target_arch", "preset",
                "eval_split", "metric"]


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
    missing = set(LONG_COLUMNS) - set(LABEL_COLUMNS) - set(df.columns)
    if missing:
        raise BenchError(f"{path} is not a long-format leaderboard: missing columns {sorted(missing)}")
    _check_labels(df, path)
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
    check_seeds_counted_once(df, f"{path}: ")
    return df


def _check_labels(df: pd.DataFrame, path: Path) -> None:
    """One label per configuration and one configuration per label; a file written before tables carried
    labels gets them from the hyperparameters (against today's defaults: all it can know)."""
    for kind, registry in (("defense", DEFENSES), ("attacker", ATTACKERS)):
        column = f"{kind}_label"
        keys = list(zip(df[kind].astype(str), df[f"{kind}_params"].astype(str)))
        if column not in df.columns:
            book = table_labels(keys, registry)
            df[column] = [book[k] for k in keys]
            continue
        pairs = pd.DataFrame({"config": keys, "label": df[column].astype(str).str.strip()}).drop_duplicates()
        fix = "regenerate it from the records with `python -m bench leaderboard --results-dir DIR`"
        if (pairs.label == "").any():
            name, params = pairs[pairs.label == ""].config.iloc[0]
            raise BenchError(f"{path}: {column} is empty for {kind} {name} {params}; {fix}")
        twice = pairs[pairs.duplicated("config", keep=False)]
        if len(twice):
            (name, params), labels = twice.config.iloc[0], sorted(twice[twice.config == twice.config.iloc[0]].label)
            raise BenchError(f"{path}: {kind} {name} {params} has two labels in {column} ({', '.join(labels)}), "
                             f"and a configuration has one; {fix}")
        twice = pairs[pairs.duplicated("label", keep=False)]
        if len(twice):
            label = twice.label.iloc[0]
            configs = [f"{n} {p}" for n, p in twice[twice.label == label].config]
            raise BenchError(f"{path}: {column} {label!r} names two {kind} configurations ({'; '.join(configs)}), "
                             f"and a label names one; {fix}")


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
