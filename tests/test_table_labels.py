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
