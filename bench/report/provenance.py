"""One provenance row per run: when, where and with what it ran, and the command that reproduces it.
"""
from __future__ import annotations

import json
import math
import shlex

import pandas as pd

from bench.errors import BenchError
from bench.params import recorded_params, setting_label
from bench.presets import get_preset
from bench.registry import ATTACKERS, DATASETS, DEFENSES
from bench.results.keys import dataset_label, spec_columns
from bench.results.tables import label_books


def finite(v) -> bool:
    return not pd.isna(v) and math.isfinite(float(v))


class Plugins:
    """What the report asks the plugin registries, asked once per distinct question of one build.

    Each question loads the plugin's entry point, which costs milliseconds (its distribution's
    metadata is parsed): asked for every run and every table row, that took minutes.
    """

    def __init__(self):
        self._answers: dict[tuple, object] = {}

    def _memo(self, key: tuple, answer):
        if key not in self._answers:
            self._answers[key] = answer()
        return self._answers[key]

    def defaults(self, registry, name: str) -> dict:
        """The plugin's current defaults ({} for a plugin no longer installed: every value then counts)."""
        def ask():
            try:
                return registry.hparams(name)
            except BenchError:
                return {}
        return self._memo(("defaults", registry.kind, name), ask)

    def run_defaults(self, registry, name: str, dataset: str, preset: str) -> dict:
        """The values `python -m bench run --dataset DATASET --preset PRESET` gives a plugin without --set:
        its defaults, under the dataset's tuned values, under the preset's (as `planning.plan_specs` does)."""

        def ask():
            try:
                tuned = DATASETS.get(dataset).plugin_overrides.get(preset, {}).get(name, {})
            except BenchError:  # a dataset no longer installed: nothing tuned for it
                tuned = {}
            try:
                presets = get_preset(preset).plugin_defaults.get(name, {})
            except BenchError:  # a preset that no longer exists: its values are given with --set anyway
                presets = {}
            return {**self.defaults(registry, name), **tuned, **presets}
        return self._memo(("run_defaults", registry.kind, name, dataset, preset), ask)

    def recorded(self, registry, name: str, params: dict) -> dict:
        return self._memo(("recorded", registry.kind, name, json.dumps(params, sort_keys=True)),
                          lambda: recorded_params(name, params, registry))


def provenance_rows(runs: list[dict]) -> list[dict]:

    plugins = Plugins()
    rows = []
    books = label_books(runs)
    for r in runs:
        s, row = r["spec"], spec_columns(r["spec"])
        rows.append({"run_id": r["run_id"], "href": f"runs/{r['run_id']}.json", "dataset": dataset_label(r),
                     "defense": books["defense"][s["defense"], row["defense_params"]]
                     + setting_label(s.get("eval_split", "test"), s.get("max_release") or 0),
                     "attacker": f"{books['attacker'][s['attacker'], row['attacker_params']]}[{s['attack_task']}]",
                     "seed": s["seed"], "command": _command(r, plugins), "commit": _commit(r.get("git_commit")),
                     "code": _code(r.get("code_digests")),
                     "versions": _versions(r.get("versions")), "wall": _duration(r.get("wall_s")),
                     "status": r["status"], "reason": str(r.get("reason", ""))})
    return sorted(rows, key=lambda x: (x["dataset"], x["defense"], x["attacker"], x["seed"], x["run_id"]))


def _code(digests) -> str:
    """`defense 1a2b3c4d, attacker ..., dataset ...`: the first 8 hex digits of each plugin's code digest;
    "" for a record made before records named their code (its results dir's code_digests.json does)."""
    if not isinstance(digests, dict):
        return ""
    return ", ".join(f"{kind} {digests[kind][:8]}" for kind in ("defense", "attacker", "dataset")
                     if isinstance(digests.get(kind), str))


def _command(record: dict, plugins: Plugins) -> str:
    """The command line that makes this run: the record's own when it has one, else rebuilt from its spec."""
    recorded = record.get("command")
    if isinstance(recorded, list) and all(isinstance(a, str) for a in recorded):
        return shlex.join(recorded)
    if isinstance(recorded, str) and recorded:
        return recorded
    return reproduce_command(record["spec"], plugins)


def reproduce_command(spec: dict, plugins: Plugins | None = None) -> str:
    """`python -m bench run ...` that plans exactly the run `spec` describes (its run_id), on any data dir.

    Every hyperparameter that differs from the value the command would give it anyway (the plugin's
    default under the dataset's and preset's tuned values) is given with --set, with the value the run
    had (legacy ones included), so a later change of a default cannot make the command mean another run.
    """
    plugins = plugins or Plugins()
    args = ["python", "-m", "bench", "run", "--dataset", spec["dataset"], "--target-task", spec["target_task"]]
    if spec["attack_task"] != spec["target_task"]:
        args += ["--private-task", spec["attack_task"]]
    args += ["--defense", spec["defense"], "--attacker", spec["attacker"], "--seeds", str(spec["seed"])]
    for name, params, registry in ((spec["defense"], spec["defense_params"], DEFENSES),
                                   (spec["attacker"], spec["attacker_params"], ATTACKERS),
                                   (spec["dataset"], spec["dataset_params"], DATASETS)):
        if registry is DATASETS:  # dataset options take no preset or tuned values
            defaults, values = plugins.defaults(registry, name), params
        else:
            defaults = plugins.run_defaults(registry, name, spec["dataset"], spec["preset"])
            values = plugins.recorded(registry, name, params)
        for k, v in sorted(values.items()):
            if k not in defaults or json.dumps(defaults[k]) != json.dumps(v):
                args += ["--set", f"{name}.{k}={_set_value(v)}"]
    if spec["preset"] != "default":
        args += ["--preset", spec["preset"]]
    if spec["target_arch"] != "cnn":
        args += ["--target-arch", spec["target_arch"]]
    if spec.get("eval_split", "test") != "test":
        args += ["--eval-split", spec["eval_split"]]
    if spec.get("max_release"):
        args += ["--max-release", str(spec["max_release"])]
    return shlex.join(args)


def _set_value(v) -> str:
    """A hyperparameter as `--set` reads it back (`registry.coerce`): exact floats, `a+b` tuples."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "+".join(map(_set_value, v))
    return repr(v) if isinstance(v, float) else str(v)


def _commit(commit) -> str:
    if not isinstance(commit, str) or not commit:
        return "" if commit is None else str(commit)
    return commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")


def _versions(versions) -> str:
    if isinstance(versions, dict):
        return ", ".join(f"{k} {v}" for k, v in versions.items())
    return "" if versions is None else str(versions)


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "" if seconds is None else str(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def count_text(n) -> str:
    """A seed count as text; '' when there is none (NaN, or pandas' NA from an empty CSV cell)."""
    return "" if pd.isna(n) else str(int(n))
