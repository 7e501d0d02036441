"""Within one table no two configurations share a label, whatever the plugin's defaults are today."""
import json

from cases_env import FakeEntryPoint


class Squeeze:
    """A defense whose `epochs` default moves between runs."""

    description = "moves its default"
    releases = "image"
    baseline = False

    def __init__(self, epochs: int = 2, lr: float = 1e-3):
        self.epochs, self.lr = epochs, lr


def _register(monkeypatch, default: int):
    import bench.registry as R

    cls = type("Squeeze", (Squeeze,), {"__init__": lambda self, epochs=default, lr=1e-3: None})
    monkeypatch.setattr(R.DEFENSES, "_entries", {**R.DEFENSES._entries,
                                                 "squeeze": FakeEntryPoint("squeeze", "m:S", "d", lambda: cls)})
    monkeypatch.setattr(R.DEFENSES, "_loaded", {k: v for k, v in R.DEFENSES._loaded.items() if k != "squeeze"})


def _labels(*params):
    from bench.params import table_labels

    pairs = [("squeeze", json.dumps(p, sort_keys=True)) for p in params]
    labels = table_labels(pairs)
    return [labels[p] for p in pairs]


def test_a_default_that_moved_between_two_runs_leaves_two_labels(monkeypatch):
    old, new = {"epochs": 2, "lr": 1e-3}, {"epochs": 3, "lr": 1e-3}
    _register(monkeypatch, default=3)
    assert _labels(old, new) == ["squeeze(epochs=2)", "squeeze"]
    _register(monkeypatch, default=2)   # restored
    assert _labels(old, new) == ["squeeze", "squeeze(epochs=3)"]


def test_a_record_made_before_a_hyperparameter_existed_is_told_apart(monkeypatch):
    _register(monkeypatch, default=2)
    # The first ran before `epochs` existed; the second at its default: alike by today's defaults.
    assert _labels({"lr": 1e-3}, {"epochs": 2, "lr": 1e-3}) == ["squeeze(epochs=unset)", "squeeze(epochs=2)"]
    # Values that one text would round together are written in full.
    assert _labels({"epochs": 2, "lr": 0.0012}, {"epochs": 2, "lr": 0.00120001}) == \
        ["squeeze(lr=0.0012)", "squeeze(lr=0.00120001)"]
    # Alone in its table a configuration keeps its short label.
    assert _labels({"lr": 1e-3}) == ["squeeze"]


def test_a_configuration_is_labelled_against_the_defaults_it_first_ran_under(monkeypatch):
    from bench.params import label_book

    _register(monkeypatch, default=3)   # today's default; both runs below recorded their own
    old, new = json.dumps({"epochs": 2, "lr": 1e-3}), json.dumps({"epochs": 3, "lr": 1e-3})
    ran_at_2 = {"epochs": 2, "lr": 1e-3}
    alone = label_book([("squeeze", old, ran_at_2, "2026-01-01T00:00:00")])
    assert alone == {("squeeze", old): "squeeze"}, "today's default relabelled a run made under another"
    both = label_book([("squeeze", new, {"epochs": 3, "lr": 1e-3}, "2026-02-01T00:00:00"),
                       ("squeeze", old, ran_at_2, "2026-01-01T00:00:00")])
    assert both == {("squeeze", old): "squeeze", ("squeeze", new): "squeeze(epochs=3)"}
    # A configuration rerun after the change is still labelled by its first run.
    again = label_book([("squeeze", old, ran_at_2, "2026-01-01T00:00:00"),
                        ("squeeze", old, {"epochs": 3, "lr": 1e-3}, "2026-03-01T00:00:00")])
    assert again == {("squeeze", old): "squeeze"}
    # Nothing says which ran first: neither keeps the short label.
    unknown = label_book([("squeeze", new, {"epochs": 3, "lr": 1e-3}, None), ("squeeze", old, ran_at_2, None)])
    assert unknown == {("squeeze", old): "squeeze(epochs=2)", ("squeeze", new): "squeeze(epochs=3)"}


PLUGIN = '''
from bench.protocol import Defense


class Shift(Defense):
    name = "shift"
    description = "adds an offset to every pixel"
    releases = "image"

    def __init__(self, offset: float = DEFAULT):
        self.offset = offset

    def _release(self, xb):
        return (xb + self.offset).clamp(0, 1)
'''


def test_changing_a_plugins_default_leaves_the_labels_of_its_earlier_runs_unchanged_and_distinct(cli, tmp_path):
    import pandas as pd

    from test_plugin_distribution import _distribution

    site, results = tmp_path / "site", tmp_path / "results"
    env = _distribution(site, "shiftdefense", "[bench.defenses]\nshift = shiftdefense:Shift\n")
    run = ("run", "--defense", "shift", "--attacker", "adaptive", "--dataset", "synthetic", "--preset", "smoke",
           "--no-reference", "--no-plots", "--results-dir", results)

    def labels():
        agg = pd.read_csv(results / "leaderboard_agg.csv")
        rows = agg[agg.defense == "shift"].drop_duplicates(["defense_params", "defense_label"])
        assert not rows.defense_params.duplicated().any() and not rows.defense_label.duplicated().any()
        headline = pd.read_csv(results / "leaderboard_headline.csv").config
        return {json.loads(p)["offset"]: label for p, label in zip(rows.defense_params, rows.defense_label)}, \
            sorted(c for c in headline if c.startswith("shift"))

    (site / "shiftdefense.py").write_text(PLUGIN.replace("DEFAULT", "0.1"))
    assert cli(*run, env_extra=env).returncode == 0
    assert labels() == ({0.1: "shift"}, ["shift"])

    (site / "shiftdefense.py").write_text(PLUGIN.replace("DEFAULT", "0.2"))
    out = cli("leaderboard", "--results-dir", results, env_extra=env)
    assert out.returncode == 0, out.stderr
    assert labels() == ({0.1: "shift"}, ["shift"]), "a new default relabelled a run made under the old one"

    out = cli(*run, env_extra=env)
    assert out.returncode == 0, out.stderr
    assert labels() == ({0.1: "shift", 0.2: "shift(offset=0.2)"}, ["shift", "shift(offset=0.2)"])


def test_a_record_with_malformed_defaults_is_refused(tmp_path):
    import pytest

    from bench.errors import BenchError
    from bench.results.records import validate_record
    from bench.runspec import RunSpec

    spec = RunSpec("vfc", "adaptive", "synthetic", "class", "class", "cnn", 0, "smoke")
    good = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": {},
            "defaults": {"defense": {"beta": 0.03}, "attacker": {}}}
    path = tmp_path / f"{spec.run_id}.json"
    assert validate_record(good, path) is good
    for bad in ({"defense": {"beta": 0.03}}, {"defense": 0.03, "attacker": {}}, ["beta"]):
        with pytest.raises(BenchError, match="defaults is"):
            validate_record({**good, "defaults": bad}, path)
