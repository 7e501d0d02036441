"""What code made a number: a digest of each plugin's source, and of the harness code that computes numbers.

A plugin's digest is a sha256 over the source files of the module that defines its class and of
every module of the same package it reaches: through its base classes and through the names its
modules import (a helper module of the plugin's own package counts; the harness, torch and other
packages do not). The package is the top-level one of the class's module (`mydefense`,
`defenses`, `attackers`), except for loaders inside the harness (`bench.data`), whose package is
`bench.data`: the rest of `bench` is the harness digest's. So editing `defenses/vfc.py` changes
vfc's digest and no other defense's, while editing a user's `mypkg/nets.py` changes the digest of
every plugin in `mypkg` that uses it.

The harness digest covers the modules whose code decides a number a run records (the training
loop, the models, the plugin base classes, the pipeline, the metrics, splitting, precision). It
keys every cached artifact, so no model trained by other training code is reused, and it is
recorded, but it never makes a record stale: see docs/design.md, "Code identity".

Digests are computed once per process and plugin (`forget` drops them: a sweep starts with it,
so a long-lived process sees files edited since its last sweep), never per row.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType

from bench.errors import BenchError
from bench.registry import ATTACKERS, DATASETS, DEFENSES

KINDS = ("defense", "attacker", "dataset")
HARNESS_FILES = ("training.py", "models.py", "protocol.py", "pipeline.py", "metrics.py", "data/splits.py",
                 "precision.py")
# The file, in a results dir, naming the digests of the code that made its records written before
# records carried digests (results/reference has one; see `legacy_digests`).
LEGACY_FILE = "code_digests.json"

_digests: dict[tuple[str, str], str | None] = {}
_harness: list[str] = []
_legacy: dict[tuple[str, float], dict] = {}


def forget() -> None:
    """Drop this process's digests: the next use reads the files as they are now."""
    _digests.clear()
    _harness.clear()
    _legacy.clear()


def registries() -> dict:
    return {"defense": DEFENSES, "attacker": ATTACKERS, "dataset": DATASETS}


def plugin_digest(kind: str, name: str) -> str | None:
    """The digest of the code of plugin `name` of `kind`; None when it does not load or its source cannot
    be read (then nothing of it is judged by code: the run itself reports why the plugin fails)."""
    key = (kind, name)
    if key not in _digests:
        try:
            cls = registries()[kind].get(name)
        except BenchError:
            _digests[key] = None
        else:
            _digests[key] = class_digest(cls)
    return _digests[key]


def harness_digest() -> str:
    if not _harness:
        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for rel in HARNESS_FILES:
            h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
        _harness.append(h.hexdigest())
    return _harness[0]


def run_digests(spec) -> dict:
    """{"defense", "attacker", "dataset", "harness"} digests of the code a run of `spec` executes."""
    return {"defense": plugin_digest("defense", spec.defense), "attacker": plugin_digest("attacker", spec.attacker),
            "dataset": plugin_digest("dataset", spec.dataset), "harness": harness_digest()}


def class_digest(cls: type) -> str | None:
    modules = source_modules(cls)
    if not modules:
        return None
    h = hashlib.sha256()
    for name in sorted(modules):
        h.update(name.encode() + b"\0" + modules[name] + b"\0")
    return h.hexdigest()


def source_modules(cls: type) -> dict[str, bytes]:
    """{module name: source bytes} of the modules `cls`'s digest covers (see the module docstring)."""
    start = sys.modules.get(cls.__module__)
    if start is None:
        return {}
    scope = _scope(start.__name__)
    seen: dict[str, bytes] = {}
    todo = [start] + [sys.modules[b.__module__] for b in cls.__mro__
                      if b.__module__ in sys.modules and _inside(b.__module__, scope)]
    while todo:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = _source(module)
        for value in list(vars(module).values()):
            try:
                owner = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            except Exception:  # an object whose attributes raise: it names no module
                owner = None
            other = sys.modules.get(owner) if isinstance(owner, str) else None
            if isinstance(other, ModuleType) and _inside(other.__name__, scope) and other.__name__ not in seen:
                todo.append(other)
    return {k: v for k, v in seen.items() if v}


def _scope(module: str) -> str:
    if module == "bench" or module.startswith("bench."):
        return "bench.data"
    return module.split(".")[0]


def _inside(module: str, scope: str) -> bool:
    return module == scope or module.startswith(scope + ".")


def _source(module: ModuleType) -> bytes:
    path = getattr(module, "__file__", None)
    if path and path.endswith(".py"):
        try:
            return Path(path).read_bytes()
        except OSError:
            pass
    try:
        return inspect.getsource(module).encode()
    except (OSError, TypeError):
        return b""


def changed(record: dict, current: dict, legacy: dict | None = None) -> list[tuple[str, str]]:
    """The (kind, name) of each plugin of `record` whose code is not the code that made it.

    A record carries `code_digests`; one written before records had them is judged by `legacy`
    (the results dir's LEGACY_FILE, {kind: {name: digest}}), and taken as made by today's code
    when that names no digest for it. The file also vouches for the code it names: a plugin whose
    code now is the digest the file names (written on purpose after a refactor was shown to keep
    the numbers) made every record of that dir. An unknown digest (None, on either side) matches anything.
    """
    spec = record["spec"]
    recorded = record.get("code_digests")
    out = []
    for kind in KINDS:
        name = spec[kind]
        vouched = (legacy or {}).get(kind, {}).get(name)
        old = recorded.get(kind) if recorded is not None else vouched
        now = current.get(kind)
        if old is not None and now is not None and old != now and vouched != now:
            out.append((kind, name))
    return out


def legacy_digests(results_dir: Path) -> dict:
    """The LEGACY_FILE of `results_dir` ({} when there is none), read once per process and version of the file."""
    path = Path(results_dir) / LEGACY_FILE
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return {}
    if (str(path), stamp) not in _legacy:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"cannot read {path}: {e}; it must map defense/attacker/dataset -> plugin -> digest")
        ok = isinstance(data, dict) and all(
            k in KINDS and isinstance(v, dict) and all(isinstance(n, str) and isinstance(d, str) for n, d in v.items())
            for k, v in data.items())
        if not ok:
            raise BenchError(f"{path} is not a code digest file: it must map {', '.join(KINDS)} -> plugin -> digest")
        _legacy[(str(path), stamp)] = data
    return _legacy[(str(path), stamp)]


def builtin_digests() -> dict:
    """{kind: {name: digest}} of every plugin this repository declares (the content of a LEGACY_FILE)."""
    out = {}
    for kind, registry in registries().items():
        out[kind] = {}
        for name in registry.names():
            source = registry.source(name)
            if source.endswith("(repurpose-bench)"):
                out[kind][name] = plugin_digest(kind, name)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.code_digest [--write DIR]`: print (or write to DIR/code_digests.json) the built-ins' digests.

    Write it only after checking that the code of the plugins whose digest changed still gives the
    numbers of DIR's records (tests/test_code_identity.py says how).
    """
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.code_digest")
    p.add_argument("--write", type=Path, metavar="DIR", help="write DIR/code_digests.json")
    args = p.parse_args(argv)
    text = json.dumps(builtin_digests(), indent=1, sort_keys=True) + "\n"
    if args.write is None:
        print(text, end="")
    else:
        from bench.storage import atomic_write_bytes

        atomic_write_bytes(args.write / LEGACY_FILE, text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
