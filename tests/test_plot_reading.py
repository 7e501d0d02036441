"""Figures read as the tables rank: a weak attacker or an undefined value never sets an axis's range,
the trade-off shows the utility floor on a readable axis, and a long legend stays off the data."""
import importlib

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Text

from bench.plots.attackers import attacker_figures
from bench.plots.tradeoff import MIN_UTILITY_SPAN, tradeoff_figure
from bench.results.tables import aggregate, long_table, worst_case
from bench.runspec import RunSpec


def _run(defense: str, params: dict, seed: int, leakage: float | None, utility: float = 0.9, clean: float = 0.92,
         weak: bool = False) -> dict:
    spec = RunSpec(defense=defense, attacker="adaptive", dataset="d", target_task="class", attack_task="class",
                   target_arch="cnn", seed=seed, preset="smoke", defense_params=params, attacker_params={})
    metrics = {"clean_acc": clean, "utility_acc": utility, "attack_acc": 0.8, "chance": 0.1}
    if leakage is not None:
        metrics["leakage"] = leakage
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "flags": {"weak_attacker": weak},
            "metrics": metrics}


@pytest.fixture
def saved(monkeypatch):
    """The figures the figure modules would save from now on in this test, drawn and kept open."""
    figures = {}

    def keep(fig, path, **kwargs):
        fig.canvas.draw()   # lays the figure out, as saving would: legends and texts get their places
        figures[path.name] = fig
        return path

    for family in ("tradeoff", "attackers", "budget"):
        monkeypatch.setattr(importlib.import_module(f"bench.plots.{family}"), "save_png", keep)
    yield figures
    for fig in figures.values():
        plt.close(fig)


def _texts(fig) -> set[str]:
    return {t.get_text() for t in fig.findobj(Text) if t.get_text()}


def test_a_weak_attacker_and_an_undefined_cell_never_set_the_range(tmp_path, saved):
    runs = [_run("identity", {}, seed, 1.0) for seed in (0, 1)]
    runs += [_run("noise", {"sigma": 0.1}, seed, 0.8 + seed / 10) for seed in (0, 1)]
    runs += [_run("noise", {"sigma": 0.2}, seed, 57.0 + seed, weak=True) for seed in (0, 1)]
    # A leakage over a zero denominator is undefined: the record leaves it out, never fills it in.
    runs += [_run("noise", {"sigma": 0.3}, seed, None) for seed in (0, 1)]
    agg = aggregate(long_table(runs))
    assert worst_case(agg).worst_leakage.max() <= 1   # the tables keep the weak attacker out of the worst case

    (path,) = attacker_figures(agg, tmp_path)
    (ax,) = [a for a in saved[path.name].axes if a.get_title() == "adaptive[class]"]
    low, high = ax.get_xlim()
    assert low <= 0 and 1 <= high < 2                 # 0, 1 and the calibrated 0.85: not 57.5
    texts = _texts(saved[path.name])
    assert "57.5" in texts and "undefined" in texts   # the weak value written beside its arrow


def _one_defense(tmp_path, n_configs: int = 1):
    """A user's own results: `n_configs` noise configurations, no identity, two seeds each."""
    runs = [_run("noise", {"sigma": round(0.01 * (i + 1), 2)}, seed, 0.4 + 0.01 * i, utility=0.89 + 0.01 * seed)
            for i in range(n_configs) for seed in (0, 1)]
    agg = aggregate(long_table(runs))
    return worst_case(agg), agg


def test_a_single_point_tradeoff_shows_the_floor_on_a_readable_axis(tmp_path, saved):
    worst, agg = _one_defense(tmp_path)
    tradeoff_figure(worst, agg, tmp_path / "tradeoff.png", floor=0.95)
    fig = saved["tradeoff.png"]
    (ax,) = fig.axes
    floor = 0.95 * 0.92
    vertical = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1]
    assert any(np.isclose(line.get_xdata()[0], floor) for line in vertical)
    assert any(t.startswith("utility floor") for t in _texts(fig))
    low, high = ax.get_xlim()
    assert high - low >= MIN_UTILITY_SPAN and low < floor < high and low < 0.895 < high
    bottom, top = ax.get_ylim()
    assert bottom <= 0 and top >= 1


def test_a_long_legend_sits_outside_the_axes_and_leaves_them_most_of_the_figure(tmp_path, saved):
    worst, agg = _one_defense(tmp_path, n_configs=25)
    tradeoff_figure(worst, agg, tmp_path / "tradeoff.png")
    fig = saved["tradeoff.png"]
    (ax,) = fig.axes
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 25
    renderer = fig.canvas.get_renderer()
    box, data = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not box.overlaps(data)
    assert data.width > 0.6 * fig.bbox.width and data.height > 0.4 * fig.bbox.height
