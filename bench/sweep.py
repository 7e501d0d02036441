"""`--set name.param=value` parsing: typed, validated, and comma-separated values sweep."""
from __future__ import annotations

import itertools
import math

from bench.errors import BenchError
from bench.registry import Registry, coerce, hparams_of


def parse_sets(items: list[str], plugin_names: dict[str, Registry]) -> dict[str, dict[str, list[str]]]:
    """{'vfc': {'beta': ['0.01', '0.1']}} from ['vfc.beta=0.01,0.1']; plugin names must be in the run.

    A key given twice is refused (never silently the last one): a sweep is one `--set` with a list.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        plugin, dot, param = name.partition(".")
        if not sep or not dot or not plugin or not param or value == "":
            raise BenchError(f"--set {item!r}: expected name.param=value (e.g. --set finetune.budget=500)")
        if plugin not in plugin_names:
            raise BenchError(f"--set {item!r}: {plugin!r} is not a defense, attacker or dataset of this run; "
                             f"valid choices: {', '.join(sorted(plugin_names))}")
        if param in out.get(plugin, {}):
            earlier = ",".join(out[plugin][param])
            raise BenchError(f"--set {name} is given twice ({earlier!r} and {value!r}); give it once, "
                             f"with comma-separated values to sweep them (--set {name}={earlier},{value})")
        out.setdefault(plugin, {})[param] = value.split(",")
    return out


def count_configurations(sets: dict[str, list[str]]) -> int:
    """How many configurations `configurations` would make of these `--set` values, without making them."""
    return math.prod(len(values) for values in sets.values())


def configurations(registry: Registry, name: str, sets: dict[str, list[str]],
                   preset_defaults: dict | None = None) -> list[dict]:
    """Every combination of the swept values, each fully typed (defaults filled in, legacy values left out).

    `preset_defaults` (a preset's or a dataset's values for this plugin) replace the plugin's own
    defaults; `--set` values replace both.
    """
    defaults = hparams_of(registry.get(name))
    unknown_preset = set(preset_defaults or {}) - set(defaults)
    if unknown_preset:  # a preset naming a parameter the plugin no longer has is a harness bug
        raise ValueError(f"preset sets unknown hyperparameters of {name}: {sorted(unknown_preset)}")
    defaults = {**defaults, **(preset_defaults or {})}
    for param in sets:
        if param not in defaults:
            valid = ", ".join(sorted(defaults)) or "(it has none)"
            raise BenchError(f"--set {name}.{param}: unknown hyperparameter of {registry.kind} {name}; "
                             f"valid choices: {valid}")
    grid = [[(p, coerce(v, defaults[p], f"{name}.{p}")) for v in values] for p, values in sets.items()]
    configs = [{**defaults, **dict(combo)} for combo in itertools.product(*grid)] if grid else [dict(defaults)]
    # A parameter at the value every run had before it existed (`Plugin.legacy_defaults`) is left out,
    # so such a run keeps the run_id it always had; the pipeline fills it back in (`recorded_params`).
    legacy = getattr(registry.get(name), "legacy_defaults", {})
    return [{k: v for k, v in c.items() if not (k in legacy and legacy[k] == v)} for c in configs]
