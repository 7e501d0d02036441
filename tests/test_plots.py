"""Plots from a hand-made results directory (run records as bench/runner.py writes them)."""
import colorsys
import json
import struct

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.text import Text

from bench.pipeline import save_samples
from bench.plots.sweeps import SWEEP_CONTEXT
from bench.plots.write import write_plots
from bench.registry import DEFENSES
from bench.results.records import load_runs, write_run
from bench.runspec import RunSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ATTACKS = {"adaptive": "class", "attribute": "parity", "inversion": "class"}


def _record(defense: str, params: dict, attacker: str, seed: int, strength: float,
            max_release: int | None = None) -> dict:
    """An `ok` run record; `strength` in [0, 1] scales how much the defense costs utility and attacks."""
    spec = RunSpec(defense=defense, attacker=attacker, dataset="synthetic", target_task="class",
                   attack_task=ATTACKS[attacker], target_arch="cnn", seed=seed, preset="smoke",
                   defense_params=params, attacker_params={}, max_release=max_release)
    noise = 0.01 * seed
    metrics = {"clean_acc": 0.95, "utility_acc": 0.95 - 0.2 * strength + noise, "agreement": 0.9 - 0.2 * strength,
               "fit_s": 1.0, "release_ms_per_image": 0.1, "released_bytes_per_image": 1024.0, "attack_fit_s": 1.0}
    if attacker == "inversion":
        metrics.update(psnr=25 - 10 * strength + noise, ssim=0.9 - 0.6 * strength + noise, psnr_chance=12.0,
                       ssim_chance=0.3)
    else:
        metrics.update(attack_acc=0.9 - 0.5 * strength + noise, chance=0.25 if attacker == "adaptive" else 0.5,
                       leakage=1 - strength)
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": metrics,
            "flags": {"weak_attacker": False}, "knowledge": "gray-box", "device": "cpu", "preset": "smoke"}


def _results(tmp_path, arl_configs: list[dict], samples: bool = False, max_release: int | None = None):
    """identity plus each ARL configuration, every attacker, two seeds."""
    res = tmp_path / "results"
    defaults = DEFENSES.hparams("arl")
    configs = [("identity", {}, 0.0)] + [("arl", {**defaults, **c}, min(1.0, c.get("lam", 0.1))) for c in arl_configs]
    for defense, params, strength in configs:
        for attacker in ATTACKS:
            for seed in (0, 1):
                record = _record(defense, params, attacker, seed, strength, max_release)
                write_run(res, record)
                if samples and attacker == "inversion":
                    # A capped release is scored on another subset of test: other originals.
                    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(max_release or 0))
                    save_samples(res / "samples" / f"{record['run_id']}.npz",
                                 {"original": x, "inverted": (x * (1 - strength)), "released": torch.rand(4, 64, 4, 4)})
    return res


def _texts_of_saved_figures(monkeypatch) -> dict[str, set[str]]:
    """file name -> every text drawn in that figure (titles, tick labels, legend entries), for the
    figures `write_plots` saves from now on in this test."""
    import importlib

    from bench.plots import files

    texts: dict[str, set[str]] = {}
    save = files.save_png

    def recording_save(fig, path, **kwargs):
        saved = save(fig, path, **kwargs)   # drawn first: tick labels hold their text only once drawn
        texts[path.name] = {t.get_text() for t in fig.findobj(Text) if t.get_text()}
        return saved

    for family in ("tradeoff", "attackers", "grids", "budget", "sweeps"):
        monkeypatch.setattr(importlib.import_module(f"bench.plots.{family}"), "save_png", recording_save)
    return texts


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def test_lam_sweep_writes_a_sweep_plot(tmp_path):
    res = _results(tmp_path, [{"lam": 0.0}, {"lam": 0.1}, {"lam": 1.0}])
    written = write_plots(res)
    sweep = res / "plots" / "sweep-synthetic-arl-lam.png"
    assert sweep in written
    width, height = _png_size(sweep)
    assert width > 1000 and height > 300                  # one panel per metric: utility, PSNR, SSIM, 2 attacks
    assert plt.imread(sweep).ndim == 3                   # decodes as an image
    assert [p.name for p in written if p.name.startswith("sweep-")] == [sweep.name]   # nothing else varies


def test_no_sweep_without_a_one_parameter_sweep(tmp_path):
    single = _results(tmp_path / "single", [{}])
    assert not [p for p in write_plots(single) if p.name.startswith("sweep-")]
    assert not list((single / "plots").glob("sweep-*"))
    # Two hyperparameters changed together are not a sweep of either.
    confounded = _results(tmp_path / "confounded", [{"lam": 0.0, "rec": "pixel"}, {"lam": 1.0, "rec": "perceptual"}])
    assert not list((confounded / "plots").glob("sweep-*")) and not [
        p for p in write_plots(confounded) if p.name.startswith("sweep-")]


def test_grid_has_rows_for_each_configuration_of_one_defense(tmp_path):
    one = _results(tmp_path / "one", [{"lam": 0.0}], samples=True)
    three = _results(tmp_path / "three", [{"lam": 0.0}, {"lam": 2.0}, {"lam": 10.0}], samples=True)
    write_plots(one)
    write_plots(three)
    _, height_one = _png_size(one / "plots" / "grid-synthetic.png")
    _, height_three = _png_size(three / "plots" / "grid-synthetic.png")
    assert height_three > height_one * 1.4   # two more inverted rows (feature maps have no image row)


def test_capped_and_uncapped_runs_of_one_configuration_are_told_apart(tmp_path, monkeypatch):
    """A capped identity twin next to the uncapped identity runs: two legend entries, own originals."""
    res = _results(tmp_path, [{"lam": 1.0}], samples=True)
    write_plots(res)
    _, height_uncapped = _png_size(res / "plots" / "grid-synthetic.png")
    _results(tmp_path, [], samples=True, max_release=2)   # identity capped at 2 released images, same directory
    texts = _texts_of_saved_figures(monkeypatch)
    written = {p.name: p for p in write_plots(res)}
    assert {"tradeoff.png", "attackers-synthetic.png", "grid-synthetic.png"} <= set(written)
    assert "attackers.png" not in written   # one per-attacker figure per dataset, no longer one for all
    assert {"identity", "identity [2 released]"} <= texts["tradeoff.png"]
    _, height_both = _png_size(written["grid-synthetic.png"])
    assert height_both > height_uncapped * 1.3   # a second originals row, then the capped identity's inversions


def test_a_sweep_compares_its_points_on_the_seeds_they_all_have(tmp_path):
    """lam=1 has seeds 0 and 1, lam=0 only seed 0: the sweep shows seed 0 for both, not a mean next to one seed."""
    from bench.plots.sweeps import on_common_seeds, sweep_lines
    from bench.results.tables import aggregate, long_table

    res = _results(tmp_path, [{"lam": 1.0}])
    lam0 = {**DEFENSES.hparams("arl"), "lam": 0.0}
    write_run(res, _record("arl", lam0, "adaptive", 0, 0.0))
    write_run(res, _record("arl", lam0, "adaptive", 1, 0.0, max_release=2))  # seed 1, but another setting
    long = long_table(load_runs(res))
    configs = aggregate(long).query("defense == 'arl'")[["defense_params", *SWEEP_CONTEXT]].drop_duplicates()
    lines = sweep_lines(configs)["lam"]
    seeds, agg = on_common_seeds(long, "arl", lines)
    assert seeds == [0]
    assert set(agg.n) == {1} and set(aggregate(long).n) == {1, 2}


def _fmd_eps_sweep(tmp_path):
    """identity and fmd at eps = 4, 8, 16 (the default) and 32 /255, every attacker, two seeds."""
    res = tmp_path / "results"
    defaults = DEFENSES.hparams("fmd")
    configs = [("identity", {}, 0.0)] + [("fmd", {**defaults, "eps": eps / 255}, eps / 32) for eps in (4, 8, 16, 32)]
    for defense, params, strength in configs:
        for attacker in ATTACKS:
            for seed in (0, 1):
                write_run(res, _record(defense, params, attacker, seed, strength))
    return res


def test_fmd_configurations_are_labelled_in_255ths_everywhere(tmp_path, monkeypatch):
    res = _fmd_eps_sweep(tmp_path)
    texts = _texts_of_saved_figures(monkeypatch)
    write_plots(res)
    assert {"fmd(eps=4/255)", "fmd(eps=8/255)", "fmd", "fmd(eps=32/255)"} <= texts["tradeoff.png"]  # legend
    assert {"fmd(eps=4/255)", "fmd(eps=32/255)"} <= texts["attackers-synthetic.png"]                 # row labels
    assert {"4/255", "8/255", "16/255", "32/255"} <= texts["sweep-synthetic-fmd-eps.png"]             # x ticks
    # No figure spells a float out to all its digits (8/255 = 0.03137254901960784).
    assert not [t for figure in texts.values() for t in figure if "0.0313" in t or "0.0156" in t]


def test_each_configuration_of_a_panel_has_its_own_look_in_its_defense_colour():
    from bench.plots.style import config_styles, defense_colour

    arl, fmd = DEFENSES.hparams("arl"), DEFENSES.hparams("fmd")
    configs = ([("identity", {}, 0), ("identity", {}, 500)]
               + [("arl", {**arl, "lam": lam}, 0) for lam in range(15)]    # more than there are markers
               + [("fmd", {**fmd, "eps": eps / 255}, 500) for eps in (4, 8, 16)])
    rows = pd.DataFrame([{"defense": d, "defense_params": json.dumps(p, sort_keys=True), "eval_split": "test",
                          "max_release": cap} for d, p, cap in configs])
    styles = config_styles(rows)
    assert len(styles) == len(configs) and len(set(styles.values())) == len(configs)
    assert list(styles)[:2] == ["identity", "identity [500 released]"]   # the reference first
    for defense in ("arl", "fmd"):
        family = [s for name, s in styles.items() if name.startswith(defense)]
        # Shades of the defense's colour: its hue, lighter or darker.
        hue = colorsys.rgb_to_hls(*defense_colour(defense))[0]
        assert all(abs(colorsys.rgb_to_hls(*s.colour)[0] - hue) < 1e-6 for s in family)
    assert len({defense_colour(d) for d in DEFENSES.names()}) == len(DEFENSES.names())


def test_budget_ticks_leave_a_budget_crowded_by_the_next_unlabelled():
    from bench.plots.budget import budget_tick_labels
    assert budget_tick_labels([100, 300, 1000, 3000, 20000, 22500]) == ["100", "300", "1000", "3000", "", "22500"]
    assert budget_tick_labels([100, 2000, 3000]) == ["100", "2000", "3000"]
