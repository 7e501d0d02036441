"""Result files and leaderboards (see `hostile.py` for what a Case is).

- Every malformed run record in {res}/runs is refused with one line naming the file, by
  `run` before any work (the runner loads every record first: nothing new appears in the
  results dir), by `leaderboard` and by `plot` (`bench.results.records.validate_record`, the one check).
- A record under another name than its run_id, a second file for one run_id, a spec that
  does not hash to its run_id, and two distinct runs the leaderboard would count as one
  seed of one configuration: refused, naming the file(s).
- `compare` on anything but a long-format leaderboard: one line naming the file.
- Names taken from records (datasets, defenses, hyperparameters) never lead a plot out of
  {res}/plots: `plot` writes slugged names inside it (checked below), and refuses a `plots`
  that is a symlink out of the results dir; a symlink at a figure's name is replaced, not
  written through.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from conftest import REPO
from hostile import REFERENCE_RECORD, SMOKE, Case

REFERENCE_NAME = REFERENCE_RECORD.name
COMMITTED_LONG = REPO / "results" / "reference" / "leaderboard.csv"


# --- records ---------------------------------------------------------------------------------
def ok_record(dataset: str = "synthetic", defense: str = "identity", params: dict | None = None,
              attacker: str = "adaptive", seed: int = 0, dataset_params: dict | None = None,
              strength: float = 0.0) -> dict:
    """A finished `ok` record as the runner writes it, for a spec of our choosing."""
    from bench.runspec import RunSpec

    spec = RunSpec(defense=defense, attacker=attacker, dataset=dataset, target_task="class", attack_task="class",
                   target_arch="cnn", seed=seed, preset="smoke", defense_params=params or {}, attacker_params={},
                   dataset_params=dataset_params or {})
    metrics = {"clean_acc": 0.9, "utility_acc": 0.9 - 0.2 * strength, "agreement": 0.9 - 0.1 * strength}
    if attacker == "inversion":
        metrics.update(psnr=25.0 - 10 * strength, ssim=0.8 - 0.5 * strength, psnr_chance=11.0, ssim_chance=0.2)
    else:
        metrics.update(attack_acc=0.85 - 0.5 * strength, chance=0.25, leakage=1.0 - strength)
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": metrics,
            "flags": {"weak_attacker": False}, "knowledge": "gray-box", "device": "cpu", "preset": "smoke"}


def runs_dir(tmp: Path) -> Path:
    return tmp / "results" / "runs"


def put(tmp: Path, record, name: str | None = None) -> Path:
    """`record` (a dict, or raw text/bytes) as {res}/runs/<name or its run_id>.json."""
    path = runs_dir(tmp) / (name or f"{record['run_id']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(record, bytes):
        path.write_bytes(record)
    elif isinstance(record, str):
        path.write_text(record)
    else:
        path.write_text(json.dumps(record, indent=2))   # json.dumps writes NaN as NaN, as a bad writer would
    return path


BASE = ok_record()
BASE_NAME = f"{BASE['run_id']}.json"


def mutated(change):
    """A setup writing BASE, changed by `change(record)`, under BASE's own file name."""
    def setup(tmp, monkeypatch):
        record = json.loads(json.dumps(BASE))
        change(record)
        put(tmp, record, BASE_NAME)
    return setup


def _set(path: str, value):
    def change(record):
        *parents, last = path.split(".")
        d = record
        for p in parents:
            d = d[p]
        d[last] = value
    return change


def _delete(path: str):
    def change(record):
        *parents, last = path.split(".")
        d = record
        for p in parents:
            d = d[p]
        del d[last]
    return change


def raw(content, name: str = "x.json"):
    return lambda tmp, monkeypatch: put(tmp, content, name)


def _directory(tmp, monkeypatch):
    (runs_dir(tmp) / "x.json").mkdir(parents=True)
    (runs_dir(tmp) / "x.json" / "inner.txt").write_text("a directory named like a record\n")


def _dangling(tmp, monkeypatch):
    os.symlink(tmp / "results" / "gone.json", runs_dir(tmp) / "x.json")


def _link_outside(tmp, monkeypatch):
    """A perfectly valid record, but outside runs/: a symlink must not pull it in (nor a rerun overwrite it)."""
    target = tmp / "outside" / BASE_NAME
    target.write_text(json.dumps(BASE))
    os.symlink(target, runs_dir(tmp) / BASE_NAME)


def _misnamed(tmp, monkeypatch):
    put(tmp, BASE, "renamed.json")


def _duplicate(tmp, monkeypatch):
    put(tmp, json.loads(REFERENCE_RECORD.read_text()), "copy of reference.json")


def _same_seed_twice(tmp, monkeypatch):
    """Two distinct runs (dataset_params differ) that the leaderboard would count as one seed, twice."""
    put(tmp, ok_record(dataset_params={"n": 600}))
    put(tmp, ok_record(dataset_params={"n": 300}))


TWICE = sorted(f"{ok_record(dataset_params={'n': n})['run_id']}.json" for n in (600, 300))

# name -> (setup, needles). Each kind runs as `run` (SMOKE), `leaderboard` and `plot`.
BAD_RECORDS = {
    "truncated JSON": (raw('{"run_id": "abc", "sta'), ["corrupt result file", "x.json"]),
    "a JSON list": (raw("[1, 2]"), ["x.json", "not a run record", "run_id"]),
    "not UTF-8": (raw(b'{"run_id": "\xff\xfe"}'), ["x.json", "not UTF-8"]),
    "a directory named x.json": (_directory, ["x.json", "a directory"]),
    "a dangling symlink": (_dangling, ["x.json", "symlink", "does not exist"]),
    "a symlink outside runs/": (_link_outside, [BASE_NAME, "symlink", "outside"]),
    "missing metrics": (mutated(_delete("metrics")), [BASE_NAME, "missing metrics"]),
    "metrics not a dict": (mutated(_set("metrics", [0.9, 0.8])), [BASE_NAME, "metrics is a JSON list"]),
    "a metric that is a string": (mutated(_set("metrics.utility_acc", "0.9")),
                                  [BASE_NAME, "'utility_acc'", "not a number"]),
    "a metric that is a bool": (mutated(_set("metrics.leakage", True)), [BASE_NAME, "'leakage'", "boolean"]),
    "a metric that is NaN": (mutated(_set("metrics.leakage", float("nan"))), [BASE_NAME, "'leakage'", "finite"]),
    "unknown status": (mutated(_set("status", "done")), [BASE_NAME, "status", "ok, failed, not_applicable"]),
    "spec missing a key": (mutated(_delete("spec.dataset")), [BASE_NAME, "spec is missing dataset"]),
    "spec with an unknown key": (mutated(_set("spec.colour", "red")), [BASE_NAME, "unknown key", "colour"]),
    "seed a string": (mutated(_set("spec.seed", "0")), [BASE_NAME, "spec.seed", "non-negative integer"]),
    "seed a float": (mutated(_set("spec.seed", 1.5)), [BASE_NAME, "spec.seed"]),
    "defense not a name": (mutated(_set("spec.defense", ["identity"])), [BASE_NAME, "spec.defense"]),
    "flags not a dict": (mutated(_set("flags", "weak")), [BASE_NAME, "flags"]),
    "derivable flag not a boolean": (mutated(_set("flags.derivable", "yes")), [BASE_NAME, "flags", "derivable"]),
    "file name is not its run_id": (_misnamed, ["renamed.json", f"rename it to {BASE_NAME}"]),
    "second file for one run_id": (_duplicate, ["duplicate", "copy of reference.json", REFERENCE_NAME]),
    # The spec edited by hand (seed 0 -> 3), run_id and file name left alone.
    "spec does not hash to its run_id": (mutated(_set("spec.seed", 3)), [BASE_NAME, "hashes to run_id"]),
    "one seed of one configuration twice": (_same_seed_twice, [*TWICE, "seed 0", "dataset_params", "twice"]),
}

COMMANDS = {"run": SMOKE, "leaderboard": ("leaderboard", "--results-dir", "{res}"),
            "plot": ("plot", "--results-dir", "{res}")}

CASES: dict[str, Case] = {
    f"{command}: {kind}": Case(args, needles=tuple(needles), setup=setup)
    for kind, (setup, needles) in BAD_RECORDS.items() for command, args in COMMANDS.items()
}


# --- compare ---------------------------------------------------------------------------------
def _long_rows(n: int = 12) -> list[list[str]]:
    """Header and the first `n` rows of the committed long leaderboard."""
    with open(COMMITTED_LONG, newline="") as f:
        rows = list(csv.reader(f))
    return rows[:n + 1]


def _csv_text(rows, quoting=csv.QUOTE_MINIMAL) -> str:
    buf = io.StringIO()
    csv.writer(buf, quoting=quoting, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _edited(column: str, value: str, row: int = 1):
    rows = _long_rows()
    rows[row][rows[0].index(column)] = value
    return _csv_text(rows)


def _file(content, name: str = "b.csv"):
    def setup(tmp, monkeypatch):
        (tmp / "a.csv").write_text(_csv_text(_long_rows()))
        path = tmp / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return setup


def _compare_dir(tmp, monkeypatch):
    (tmp / "a.csv").write_text(_csv_text(_long_rows()))
    (tmp / "b.csv").mkdir()


def _duplicated_row():
    rows = _long_rows()
    twin = list(rows[1])
    twin[0] = "ffffffffffffffff"  # another run_id, the same configuration, seed and metric
    return _csv_text(rows + [twin])


COMPARE = ("compare", "{tmp}/a.csv", "{tmp}/b.csv")
CASES.update({
    "compare: binary garbage": Case(COMPARE, ("b.csv", "not UTF-8"), _file(bytes(range(256)) * 64)),
    "compare: PNG": Case(COMPARE, ("b.csv",), _file((REPO / "results" / "reference" / "plots" / "tradeoff.png").read_bytes())),
    "compare: empty file": Case(COMPARE, ("b.csv", "empty"), _file("")),
    "compare: a directory": Case(COMPARE, ("b.csv", "a directory"), _compare_dir),
    "compare: text that is no CSV table": Case(COMPARE, ("b.csv",), _file('a,"b\nc,d,e,f\n"g\n')),
    "compare: value not numeric": Case(COMPARE, ("b.csv", "row 1", "value", "'high'", "not a finite number"),
                                       _file(_edited("value", "high"))),
    "compare: value a number stored as text": Case(COMPARE, ("b.csv", "row 1", "value", "\"'0.873'\""),
                                                   _file(_edited("value", "'0.873'"))),
    "compare: value with a decimal comma": Case(COMPARE, ("b.csv", "row 1", "'0,873'"), _file(_edited("value", "0,873"))),
    "compare: value empty": Case(COMPARE, ("b.csv", "row 1", "value is empty"), _file(_edited("value", ""))),
    "compare: value infinite": Case(COMPARE, ("b.csv", "row 1", "value"), _file(_edited("value", "inf"))),
    "compare: values all booleans": Case(COMPARE, ("b.csv", "value", "not a finite number"),
                                         _file(_csv_text([r[:-1] + ([r[-1]] if i == 0 else ["True"])
                                                          for i, r in enumerate(_long_rows())]))),
    "compare: seed not an integer": Case(COMPARE, ("b.csv", "row 1", "seed", "'zero'"), _file(_edited("seed", "zero"))),
    "compare: one seed on two rows": Case(COMPARE, ("b.csv", "ffffffffffffffff", "n counts seeds"),
                                          _file(_duplicated_row())),
})


def _quoted_is_numbers(tmp, out):
    assert "0 of " in out.stdout and "differences exceed" in out.stdout, out.stdout


# CSV has no types: every field double-quoted is the same leaderboard, numbers and all.
CASES["compare: every field double-quoted"] = Case(
    COMPARE, outcome="ok", setup=_file(_csv_text(_long_rows(), quoting=csv.QUOTE_ALL)), check=_quoted_is_numbers)


# --- names from records never lead a plot out of plots/ -------------------------------------
def _inversion_records(tmp, dataset: str, defense: str = "arl") -> None:
    from bench.pipeline import save_samples
    import torch

    for strength, (d, params) in ((0.0, ("identity", {})), (0.5, (defense, {"lam": 1.0}))):
        for attacker in ("inversion", "adaptive"):
            record = ok_record(dataset=dataset, defense=d, params=params, attacker=attacker, strength=strength)
            put(tmp, record)
            if attacker == "inversion":
                x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
                save_samples(tmp / "results" / "samples" / f"{record['run_id']}.npz",
                             {"original": x, "released": x * 0.5, "inverted": x * (1 - strength)})


def _sweep_records(tmp, dataset: str, defense: str, param: str) -> None:
    put(tmp, ok_record(dataset=dataset))
    for value in (0.0, 1.0, 10.0):
        put(tmp, ok_record(dataset=dataset, defense=defense, params={param: value}, strength=min(value, 1) / 2))


def _all_inside(*names_like: str):
    """The plots are all plain files directly in {res}/plots, with the expected slugged names."""
    def check(tmp, out):
        plots = tmp / "results" / "plots"
        written = sorted(p.name for p in plots.iterdir())
        assert all((plots / n).is_file() and not (plots / n).is_symlink() for n in written), written
        for line in out.stdout.splitlines():
            if line.startswith("plot: "):
                path = Path(line[len("plot: "):])
                assert path.parent == plots and path.resolve().parent == plots.resolve(), line
        for prefix in names_like:
            assert any(n.startswith(prefix) for n in written), (prefix, written)
        # Nothing in the results dir but what the harness writes there.
        assert sorted(p.name for p in (tmp / "results").iterdir()) <= sorted(
            ["runs", "plots", "samples", "leaderboard.csv", "leaderboard_agg.csv", "leaderboard_worst.csv"])
    return check


def _plots_link_outside(tmp, monkeypatch):
    _inversion_records(tmp, "synthetic")
    os.symlink(tmp / "outside", tmp / "results" / "plots")


def _figure_link_outside(tmp, monkeypatch):
    _inversion_records(tmp, "synthetic")
    (tmp / "results" / "plots").mkdir()
    os.symlink(tmp / "outside" / "secret.txt", tmp / "results" / "plots" / "tradeoff.png")


def _figure_is_replaced(tmp, out):
    figure = tmp / "results" / "plots" / "tradeoff.png"
    assert not figure.is_symlink() and figure.read_bytes()[:4] == b"\x89PNG"


def _corrupt_sample(tmp, monkeypatch):
    _inversion_records(tmp, "synthetic")
    sample = next((tmp / "results" / "samples").glob("*.npz"))
    sample.write_bytes(sample.read_bytes()[:50])


def _sample_link_outside(tmp, monkeypatch):
    _inversion_records(tmp, "synthetic")
    sample = next((tmp / "results" / "samples").glob("*.npz"))
    np.savez(tmp / "outside" / "images.npz", original=np.zeros((2, 1, 4, 4), np.uint8))
    sample.unlink()
    os.symlink(tmp / "outside" / "images.npz", sample)


PLOT = COMMANDS["plot"]
CASES.update({
    "plot: dataset ../../x": Case(PLOT, outcome="ok", setup=lambda tmp, mp: _inversion_records(tmp, "../../x"),
                                  check=_all_inside("grid-x-", "tradeoff", "attackers")),
    "plot: dataset a/b": Case(PLOT, outcome="ok", setup=lambda tmp, mp: _inversion_records(tmp, "a/b"),
                              check=_all_inside("grid-a_b-")),
    "plot: dataset that is an absolute path": Case(
        PLOT, outcome="ok", setup=lambda tmp, mp: _inversion_records(tmp, str(tmp / "outside" / "pwned")),
        check=_all_inside("grid-")),
    "plot: defense and parameter ../ names in a sweep": Case(
        PLOT, outcome="ok", setup=lambda tmp, mp: _sweep_records(tmp, "../../x", "../../d", "../../lam"),
        check=_all_inside("sweep-x-", "tradeoff")),
    "plot: plots/ a symlink out of the results dir": Case(PLOT, ("plots", "symlink"), _plots_link_outside),
    "plot: a figure's name a symlink to outside": Case(PLOT, outcome="ok", setup=_figure_link_outside,
                                                       check=_figure_is_replaced),
    "plot: corrupt sample": Case(PLOT, ("corrupt sample file", ".npz"), _corrupt_sample),
    "plot: sample a symlink to outside": Case(PLOT, ("sample file", "symlink", "outside"), _sample_link_outside),
})
