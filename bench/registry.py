"""One registry class over entry points: the single discovery path for plugins.

Built-ins are declared in this project's pyproject.toml exactly as a third-party
package would declare its own, so `bench list` shows both and nothing here
needs to change when someone adds a defense. A plugin module is imported only
when it is named.

A plugin that cannot be used (its module fails to import, its entry point is no
class, or a hyperparameter has no default) is *broken*: naming it is an error
that names its distribution and the cause, `bench list` shows it as broken, and
`all` skips it (`usable`), so one bad package never takes the others down.
"""
from __future__ import annotations

import inspect
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from bench.errors import BenchError, one_line, unknown


class Registry:
    def __init__(self, group: str, kind: str):
        self.group = group
        self.kind = kind

    @cached_property
    def _entries(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name in found and found[ep.name].value != ep.value:
                raise BenchError(
                    f"{self.kind} {ep.name!r} is registered twice: {found[ep.name].value} "
                    f"({_dist(found[ep.name])}) and {ep.value} ({_dist(ep)})"
                )
            found[ep.name] = ep
        return found

    def names(self) -> list[str]:
        return sorted(self._entries)

    @cached_property
    def _loaded(self) -> dict[str, type]:
        return {}

    def get(self, name: str) -> type:
        """The plugin's class; BenchError when the name is unknown or the plugin is broken."""
        # Tables label every row through here: a class that loaded once is not checked again.
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entries:
            raise unknown(self.kind, name, self._entries)
        ep = self._entries[name]

        # Built only for an error: reading the distribution's metadata costs milliseconds per call,
        # and tables label thousands of rows through `get`.
        def where() -> str:
            return f"{self.kind} {name!r} (distribution {_dist(ep)}, entry point {ep.value})"

        try:
            cls = ep.load()
        except (Exception, SystemExit) as e:  # ImportError, SyntaxError, whatever the module raises at import
            raise BenchError(f"{where()} fails to import: {one_line(e)}") from None
        if not isinstance(cls, type):
            raise BenchError(f"{where()} is not a class but {type(cls).__name__} {cls!r}")
        try:
            hparams_of(cls)
        except BenchError as e:
            raise BenchError(f"{where()}: {e}") from None
        self._loaded[name] = cls
        return cls

    def broken(self, name: str) -> str | None:
        """Why the plugin cannot be used (the `get` error), or None when it can."""
        try:
            self.get(name)
        except BenchError as e:
            return str(e)
        return None

    def usable(self) -> tuple[list[str], dict[str, str]]:
        """(names of the plugins that load, {name: why} for the broken ones): what `all` means."""
        ok, bad = [], {}
        for name in self.names():
            why = self.broken(name)
            if why is None:
                ok.append(name)
            else:
                bad[name] = why
        return ok, bad

    def source(self, name: str) -> str:
        ep = self._entries[name]
        return f"{ep.value} ({_dist(ep)})"

    def hparams(self, name: str) -> dict[str, Any]:
        """Hyperparameters and their defaults, read from the class's `__init__`."""
        return hparams_of(self.get(name))

    def create(self, name: str, params: dict[str, Any] | None = None):
        cls = self.get(name)
        params = dict(params or {})
        valid = hparams_of(cls)
        for key, value in params.items():
            if key not in valid:
                raise unknown(f"hyperparameter for {self.kind} {name}", key, valid)
            params[key] = coerce(value, valid[key], f"{name}.{key}")
        plugin = cls(**params)
        # Plugins that declare ranges check them here, before any work (`Plugin.check_params`).
        check = getattr(plugin, "check_params", None)
        if callable(check):
            check()
        return plugin


def hparams_of(cls: type) -> dict[str, Any]:
    """{parameter: default} of `cls.__init__`; BenchError naming the class when one has no default."""
    where = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as e:
        raise BenchError(f"{where}.__init__ has no readable signature: {one_line(e)}") from None
    out = {}
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is p.empty:
            raise BenchError(f"{where}.__init__ hyperparameter {p.name!r} has no default (every hyperparameter "
                             "needs one, so that the plugin runs without --set)")
        out[p.name] = p.default
    return out


def coerce(value: Any, default: Any, where: str) -> Any:
    """Convert a `--set` string to the type of the parameter's default."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(type(default[0])(v) if default else v for v in value.split("+") if v)
    except ValueError:
        pass
    else:
        return value
    raise BenchError(f"--set {where}={value!r}: expected {type(default).__name__} like {default!r}")


def _dist(ep: EntryPoint) -> str:
    return getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"


DEFENSES = Registry("bench.defenses", "defense")
ATTACKERS = Registry("bench.attackers", "attacker")
DATASETS = Registry("bench.datasets", "dataset")
