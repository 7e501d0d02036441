"""A configuration's hyperparameters as recorded and as a person reads them in a table or plot.

Below both run specs and tables: a spec names itself with `config_label`, a table row is labelled
with it, and `recorded_params` gives old records the values they ran with.
"""
from __future__ import annotations

import json

from bench.errors import BenchError
from bench.registry import DEFENSES


def config_label(name: str, params_json: str, registry=None) -> str:
    """`vfc(beta=0.1)`: the plugin (default: a defense) with the hyperparameters that differ from its defaults;
    a baseline with its strength always (`jpeg(quality=25)`: a bare `jpeg` would hide which strength ran)."""
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
