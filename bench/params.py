"""A configuration's hyperparameters as recorded and as a person reads them in a table or plot.

Below both run specs and tables: a spec names itself with `config_label`; the configurations of a
results dir are named once, from their records, by `label_book` (each label is taken against the
defaults the plugin had when the configuration first ran, never today's, so a label never changes
meaning); and `recorded_params` gives old records the values they ran with.
"""
from __future__ import annotations

import json

from bench.errors import BenchError
from bench.registry import DEFENSES


def config_label(name: str, params_json: str, registry=None, defaults: dict | None = None) -> str:
    """`vfc(beta=0.1)`: the plugin (default: a defense) with the hyperparameters that differ from its defaults
    (`defaults`, else the installed plugin's); a baseline with its strength always (`jpeg(quality=25)`: a bare
    `jpeg` would hide which strength ran)."""
    registry = registry or DEFENSES
    params = json.loads(params_json) if params_json else {}
    try:
        plugin = registry.get(name)
        scales = getattr(plugin, "param_scales", {})
    except BenchError:  # a plugin no longer installed: show everything
        plugin, scales = None, {}
    shown = params if getattr(plugin, "baseline", False) else changed_params(name, params_json, registry, defaults)
    return name + ("(" + ", ".join(f"{k}={param_text(v, scales.get(k))}" for k, v in sorted(shown.items())) + ")"
                   if shown else "")


def changed_params(name: str, params_json: str, registry=None, defaults: dict | None = None) -> dict:
    """The hyperparameters of a record that differ from `defaults`, else from the installed plugin's defaults
    (all of them if it is not installed)."""
    registry = registry or DEFENSES
    params = json.loads(params_json) if params_json else {}
    if defaults is None:
        try:
            defaults = registry.hparams(name)
        except BenchError:
            defaults = {}
    # Tuples are stored as JSON lists: compare in JSON form.
    return {k: v for k, v in params.items() if k not in defaults or json.dumps(defaults[k]) != json.dumps(v)}


def table_labels(pairs, registry=None) -> dict[tuple[str, str], str]:
    """{(name, params_json): label} for configurations known only by their hyperparameters (a table read
    from a CSV written before tables carried labels): `label_book` against today's defaults."""
    return label_book(((name, params, None, None) for name, params in pairs), registry)


def label_book(configs, registry=None) -> dict[tuple[str, str], str]:
    """{(name, params_json): label} for every configuration of a results dir, no two sharing a label.

    `configs` holds one (name, params_json, defaults, recorded_at) per record: the plugin's defaults when
    that record was made (a dict, or None when the record did not say: today's are taken) and its
    ISO timestamp (None: unknown). A configuration is labelled against the defaults of its earliest
    record, so changing a plugin's default later never relabels what already ran.

    Two configurations can still read alike: a default changed between their runs (`vfc` before and
    after `epochs` went from 2 to 3), a hyperparameter one of them ran without, or two values that
    round to one text. The one that ran first keeps its label; the others show every hyperparameter
    the group differs in, at full precision (`unset` where one has none). Where no single
    configuration ran first (no timestamps), all of them do.
    """
    registry = registry or DEFENSES
    first: dict[tuple[str, str], tuple[str, str]] = {}   # config -> (recorded_at, defaults as JSON) of its first run
    for name, params_json, defaults, when in configs:
        seen = (when or "", json.dumps(defaults, sort_keys=True) if defaults is not None else "")
        if (name, params_json) not in first or seen < first[(name, params_json)]:
            first[(name, params_json)] = seen
    own = {config: json.loads(d) if d else None for config, (_, d) in first.items()}
    labels = {config: config_label(*config, registry, own[config]) for config in first}
    groups: dict[str, list] = {}
    for config, label in labels.items():
        groups.setdefault(label, []).append(config)
    for same in groups.values():
        if len(same) < 2:
            continue
        times = sorted(first[c][0] for c in same)
        keeps = [c for c in same if first[c][0] == times[0]] if times[0] and times[0] < times[1] else []
        params = [json.loads(p) if p else {} for _, p in same]
        differ = sorted({k for p in params for k in p
                         if len({json.dumps(q.get(k), sort_keys=True) for q in params}) > 1})
        for (name, params_json), p in zip(same, params):
            if (name, params_json) in keeps:
                continue
            shown = {**changed_params(name, params_json, registry, own[(name, params_json)]),
                     **{k: p.get(k) for k in differ}}
            text = ", ".join(f"{k}={'unset' if k not in p else json.dumps(v) if k in differ else param_text(v)}"
                             for k, v in sorted(shown.items()))
            labels[(name, params_json)] = f"{name}({text})"
    return labels


def labels_of(table, kind: str = "defense", registry=None) -> dict[tuple[str, str], str]:
    """{(name, params_json): label} of a table's `kind` ("defense" or "attacker") configurations: its
    `<kind>_label` column (named once for the whole results dir by `label_book`), else `table_labels`."""
    column = f"{kind}_label"
    keys = list(zip(table[kind], table[f"{kind}_params"]))
    if column in getattr(table, "columns", ()) and all(isinstance(v, str) and v for v in table[column]):
        book = dict(zip(keys, table[column]))
        # Rows of two results dirs (a baseline borrowed from the reference) were named by two books.
        if len(set(zip(keys, table[column]))) == len(book) == len(set(book.values())):
            return book
    return table_labels(keys, registry)


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
