"""How a run record becomes a row of the leaderboards: the columns that name its configuration and cell.

`GROUP` is one cell (a configuration against one attacker setting and task), `CONFIG` one
defense configuration; `spec_columns` reads them from a record's spec, hyperparameters as
recorded (`params.recorded_params`), and `seed_key` is what the leaderboard counts once.

`record_columns` is `spec_columns` with the dataset as a table shows it (`dataset_label`): a
dataset read from the user's directory (`folder`) is named by that directory and its content,
`folder:utkface@1a2b3c4d`, so two folders never share a row or a plot; built-in datasets keep
their plain names.
"""
from __future__ import annotations

import json

import pandas as pd

from bench.errors import BenchError
from bench.params import recorded_params
from bench.registry import ATTACKERS

LONG_COLUMNS = ["run_id", "defense", "defense_params", "defense_label", "attacker", "attacker_params",
                "attacker_label", "knowledge", "dataset", "target_task", "attack_task", "target_arch", "preset",
                "eval_split", "max_release", "seed", "weak_attacker", "derivable", "metric", "value"]
# How tables, plots and the report name a defense and an attacker configuration: one label per
# configuration for a whole results dir, taken against the defaults it first ran under
# (`bench.params.label_book`). A function of (name, params), so it rides along every grouping.
LABEL_COLUMNS = ["defense_label", "attacker_label"]
# `max_release` (0 = no cap) keeps a capped identity twin apart from the uncapped identity runs:
# they are scored on different test images.
GROUP = ["defense", "defense_params", "attacker", "attacker_params", "knowledge", "dataset", "target_task",
         "attack_task", "target_arch", "preset", "eval_split", "max_release"]
CONFIG = ["defense", "defense_params", "dataset", "target_task", "target_arch", "preset", "eval_split", "max_release"]

# Flags every long-table row carries: an attacker too weak to calibrate, a private task derivable from
# the designated one. Either keeps a row out of the worst case.
BOOL_FLAGS = ("weak_attacker", "derivable")


def spec_columns(s: dict) -> dict:
    return {"defense": s["defense"],
            "defense_params": json.dumps(recorded_params(s["defense"], s["defense_params"]), sort_keys=True),
            "attacker": s["attacker"],
            "attacker_params": json.dumps(recorded_params(s["attacker"], s["attacker_params"], ATTACKERS),
                                          sort_keys=True),
            "eval_split": s.get("eval_split", "test"), "max_release": int(s.get("max_release") or 0),
            "dataset": s["dataset"], "target_task": s["target_task"], "attack_task": s["attack_task"],
            "target_arch": s["target_arch"], "preset": s["preset"], "seed": s["seed"]}


def dataset_label(record: dict) -> str:
    """The dataset as tables, plots and the report name it: `name:dir@digest8` for a record that names the
    directory its data came from (`data_name`), else the plain name (built-in datasets, and records
    written before the directory was recorded)."""
    name, where = record["spec"]["dataset"], record.get("data_name")
    if where is None:
        return name
    version = record.get("dataset_digest")
    return f"{name}:{where}" + (f"@{version[:8]}" if version else "")


def record_columns(record: dict) -> dict:
    """`spec_columns` of a record's spec, its dataset as `dataset_label` names it."""
    return {**spec_columns(record["spec"]), "dataset": dataset_label(record)}


def seed_key(spec: dict) -> tuple:
    """What the leaderboard counts once: the configuration (GROUP but `knowledge`, which comes from the
    attacker, not the spec) and the seed. Hyperparameters are taken as recorded (`recorded_params`)."""
    row = spec_columns(spec)
    return tuple(row[c] for c in GROUP if c != "knowledge") + (row["seed"],)


def full_budget(attackers: pd.Series, attacker_params: pd.Series) -> list[bool]:
    """Which rows' attackers ran at their own budget (the plugin's default: all released images for most,
    a small labelled set for finetune), not at a point of a budget curve."""
    defaults: dict[str, object] = {}
    for a in set(attackers):
        try:
            defaults[a] = ATTACKERS.hparams(a).get("budget")
        except BenchError:   # a plugin no longer installed: its budget as recorded counts
            defaults[a] = None
    return [defaults[a] is None or json.loads(p or "{}").get("budget", defaults[a]) == defaults[a]
            for a, p in zip(attackers, attacker_params)]


def curve_params(attacker_params: pd.Series) -> list[str]:
    """An attacker's settings without its budget: the key of one budget curve."""
    return [json.dumps({k: v for k, v in json.loads(p or "{}").items() if k != "budget"}, sort_keys=True)
            for p in attacker_params]
