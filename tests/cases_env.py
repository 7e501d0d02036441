"""The environment (results dir, plugins that fail to load) and argument ranges.

Faults that need a subprocess or a finished sweep (SIGTERM, a full disk, a cache file that passes
its checksum but does not load, a real broken distribution) are in `test_env_signals.py`.
"""
from __future__ import annotations

import errno
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from hostile import SMOKE, Case

# SMOKE without its results dir, for cases that give their own.
RUN = SMOKE[:-2]


@dataclass(frozen=True)
class FakeEntryPoint:
    """What the registry reads of an `importlib.metadata.EntryPoint`: name, value, dist, load()."""

    name: str
    value: str
    dist_name: str
    loader: Callable

    @property
    def dist(self):
        return SimpleNamespace(name=self.dist_name)

    def load(self):
        return self.loader()


def _raises(exc: BaseException) -> Callable:
    def load():
        raise exc
    return load


def _returns(obj) -> Callable:
    return lambda: obj


class NoDefault:
    """A plugin class whose hyperparameter `k` has no default."""

    description = "needs k"
    releases = "image"

    def __init__(self, k, scale: float = 1.0):
        self.k, self.scale = k, scale


def _plugin(registry: str, name: str, loader: Callable, dist: str = "brokendist", only: tuple = ()):
    """setup: register a fake plugin `name` (in-process) in DEFENSES / ATTACKERS / DATASETS.

    `only`: the real plugins kept beside it (all of them when empty), so that `all` stays cheap.
    """
    def setup(tmp, monkeypatch):
        import bench.registry as R
        reg = getattr(R, registry)
        entries = dict(reg._entries)
        if only:
            entries = {k: v for k, v in entries.items() if k in only}
        entries[name] = FakeEntryPoint(name, f"{name}_mod:Plugin", dist, loader)
        monkeypatch.setattr(reg, "_entries", entries)  # the instance's cached_property value
    return setup


def _unwritable(target: str):
    """setup: creating files in tmp/<target> fails with EACCES (root ignores mode bits, so chmod cannot)."""
    def setup(tmp, monkeypatch):
        blocked = (tmp / target).resolve()
        blocked.mkdir(parents=True, exist_ok=True)
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and (Path(dir).resolve() == blocked or blocked in Path(dir).resolve().parents):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return setup


def _results_file(tmp, monkeypatch):
    (tmp / "results").write_text("not a directory\n")


def _runs_file(tmp, monkeypatch):
    (tmp / "results").mkdir()
    (tmp / "results" / "runs").write_text("not a directory\n")


def _dangling(tmp, monkeypatch):
    (tmp / "results").symlink_to(tmp / "nowhere")


def _stderr_has(*needles):
    def check(tmp, out):
        for n in needles:
            assert n in out.stderr, (n, out.stderr)
    return check


def _stdout_has(*needles):
    def check(tmp, out):
        for n in needles:
            assert n in out.stdout, (n, out.stdout)
    return check


def _one_ok_record(attacker, defense="identity"):
    def check(tmp, out):
        records = [json.loads(p.read_text()) for p in (tmp / "results" / "runs").glob("*.json")]
        mine = [r for r in records if r["spec"]["dataset"] == "synthetic"]
        assert [(r["spec"]["defense"], r["spec"]["attacker"], r["status"]) for r in mine] == \
            [(defense, attacker, "ok")], mine
        lines = [line for line in out.stderr.splitlines() if line.startswith("warning: skipping")]
        assert len(lines) == 1 and "'broken'" in lines[0] and "brokendist" in lines[0], out.stderr
    return check


def _list_check(*needles):
    def check(tmp, out):
        (line,) = [line for line in out.stdout.splitlines() if line.startswith("  broken [broken]")]
        for n in needles:
            assert n in line, (n, line)
        assert "  vfc releases" in out.stdout and "  adaptive [" in out.stdout  # the others still listed
    return check


IMPORT_ERROR = ModuleNotFoundError("No module named 'torch_nightly_only'")
EXITS = SystemExit("this plugin needs Python 4")
SYNTAX_ERROR = SyntaxError("invalid syntax", ("broken_mod.py", 3, 5, "def (:\n"))

CASES = {
    # --- the results dir --------------------------------------------------------------------------
    "results dir is a file": Case((*RUN, "--results-dir", "{res}"), ("--results-dir", "results", "not a directory"),
                                  setup=_results_file, seed_record=False),
    "results dir under a file": Case((*RUN, "--results-dir", "{res}/deeper/still"),
                                     ("results/deeper/still", "lies under", "not a directory"),
                                     setup=_results_file, seed_record=False),
    "results/runs is a file": Case((*RUN, "--results-dir", "{res}"), ("runs", "not a directory"),
                                   setup=_runs_file, seed_record=False),
    "results dir cannot be written": Case(SMOKE, ("--results-dir", "cannot be written", "permission denied"),
                                          setup=_unwritable("results")),
    "results dir under a parent that cannot be written": Case(
        (*RUN, "--results-dir", "{tmp}/locked/results"), ("locked/results", "cannot be written", "locked"),
        setup=_unwritable("locked"), seed_record=False),
    "results dir under /proc": Case((*RUN, "--results-dir", "/proc/bench-results"),
                                    ("/proc/bench-results", "cannot be written"), seed_record=False),
    "results dir is a dangling symlink": Case((*RUN, "--results-dir", "{res}"), ("broken symbolic link", "nowhere"),
                                              setup=_dangling, seed_record=False),
    "empty results dir": Case((*RUN, "--results-dir", ""), ("--results-dir", "empty"), seed_record=False),
    "blank results dir": Case((*RUN, "--results-dir", "  "), ("--results-dir", "empty"), seed_record=False),
    "empty data dir": Case((*SMOKE, "--data-dir", ""), ("--data-dir", "empty")),
    "empty results dir of leaderboard": Case(("leaderboard", "--results-dir", ""), ("--results-dir", "empty")),
    # --- argument ranges ------------------------------------------------------------------------
    "seed range of a hundred million": Case((*SMOKE, "--seeds", "0-99999999"), ("0-99999999", "100000000 seeds",
                                                                                 "at most 1000")),
    "seed range of 10**30, refused before it is expanded": Case((*SMOKE, "--seeds", f"0-{10**30}"),
                                                                ("a seed is at most",)),
    "many small seed ranges": Case((*SMOKE, "--seeds", ",".join(f"{i * 10}-{i * 10 + 9}" for i in range(101))),
                                   ("1010 seeds", "at most 1000")),
    "seed past 2**32": Case((*SMOKE, "--seeds", str(2**32)), (str(2**32), "2**32 - 1")),
    "timeout inf": Case((*SMOKE, "--timeout", "inf"), ("--timeout inf", "finite")),
    "timeout over a week": Case((*SMOKE, "--timeout", "1e9"), ("--timeout 1e+09", "one week")),
    "jobs past the limit": Case((*SMOKE, "--jobs", "100000"), ("--jobs 100000", "1024")),
    "repeated --set key": Case((*SMOKE, "--set", "adaptive.arch=cnn", "--set", "adaptive.arch=auto"),
                               ("adaptive.arch", "twice", "'cnn'", "'auto'", "adaptive.arch=cnn,auto")),
    "too many planned runs": Case(
        (*RUN, "--defense", "identity,vfc,arl", "--attacker", "adaptive,attribute,inversion,finetune",
         "--seeds", "0-999", "--results-dir", "{res}"),
        ("12000 runs", "3 defense(s) x 4 attacker(s)", "1000 seed(s)", "at most 10000")),
    "huge --set grid, refused before it is expanded": Case(
        ("run", "--dataset", "synthetic", "--preset", "smoke", "--attacker", "finetune", "--results-dir", "{res}",
         *[a for p in ("epochs", "budget", "lr") for a in ("--set", f"finetune.{p}=" + ",".join(
             str(i) for i in range(1, 200)))]), ("7880599 runs", "at most 10000")),
    "dataset sweep refused before it is expanded": Case(
        (*SMOKE, "--set", "synthetic.n=" + ",".join(map(str, range(100, 5000))),
         "--set", "synthetic.size=" + ",".join(map(str, range(8, 3000)))), ("sweeping dataset options",)),
    # --- plugins that fail to load --------------------------------------------------------------
    "defense whose module fails to import, named": Case(
        (*SMOKE, "--defense", "broken"),
        ("defense 'broken'", "brokendist", "ModuleNotFoundError", "torch_nightly_only"),
        setup=_plugin("DEFENSES", "broken", _raises(IMPORT_ERROR))),
    "attacker with a syntax error, named": Case(
        (*RUN, "--attacker", "adaptive,broken", "--results-dir", "{res}"),
        ("attacker 'broken'", "brokendist", "SyntaxError", "broken_mod.py"),
        setup=_plugin("ATTACKERS", "broken", _raises(SYNTAX_ERROR))),
    "dataset raising at import, named": Case(
        ("run", "--dataset", "broken", "--results-dir", "{res}"), ("dataset 'broken'", "otherdist", "RuntimeError",
                                                                   "needs a GPU"),
        setup=_plugin("DATASETS", "broken", _raises(RuntimeError("needs a GPU\nat import")), dist="otherdist")),
    "plugin calling sys.exit at import, named": Case(
        (*SMOKE, "--defense", "broken"), ("defense 'broken'", "brokendist", "SystemExit", "Python 4"),
        setup=_plugin("DEFENSES", "broken", _raises(EXITS))),
    "hyperparameter without a default": Case(
        (*SMOKE, "--defense", "broken"), ("defense 'broken'", "brokendist", "'k'", "no default"),
        setup=_plugin("DEFENSES", "broken", _returns(NoDefault))),
    "entry point that is no class": Case(
        (*SMOKE, "--defense", "broken"), ("defense 'broken'", "brokendist", "not a class"),
        setup=_plugin("DEFENSES", "broken", _returns(len))),
    "--attacker all skips a broken attacker": Case(
        (*RUN, "--attacker", "all", "--results-dir", "{res}"), outcome="ok",
        setup=_plugin("ATTACKERS", "broken", _raises(IMPORT_ERROR), only=("adaptive",)),
        check=_one_ok_record("adaptive")),
    "--defense all skips a broken defense": Case(
        (*SMOKE, "--defense", "all"), outcome="ok",
        setup=_plugin("DEFENSES", "broken", _raises(SYNTAX_ERROR), only=("identity",)),
        check=_one_ok_record("adaptive")),
    "list shows a broken plugin on one line": Case(
        ("list",), outcome="ok", setup=_plugin("DEFENSES", "broken", _raises(IMPORT_ERROR)),
        check=_list_check("brokendist", "ModuleNotFoundError", "torch_nightly_only")),
    "list shows a plugin without a default as broken": Case(
        ("list",), outcome="ok", setup=_plugin("DEFENSES", "broken", _returns(NoDefault)),
        check=_list_check("brokendist", "'k'", "no default")),
    # --- a repeated value is one run --------------------------------------------------------------
    "--set value given twice is one run": Case((*SMOKE, "--set", "adaptive.arch=auto,auto"), outcome="ok",
                                               check=_stdout_has("1 run(s) requested", "1 ok")),
}
