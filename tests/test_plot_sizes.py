"""Plots a person can read: every figure is at most MAX_SIDE_PX pixels on its long
side, for the committed results and for results with many more configurations and attackers."""
import json
import shutil
import struct

import pytest
import torch

from bench.pipeline import save_samples
from bench.plots.files import MAX_SIDE_PX, plot_path
from bench.plots.grids import GRID_ROWS_PER_PAGE, grid_pages
from bench.plots.write import write_plots
from bench.registry import DEFENSES
from bench.results.records import write_run
from bench.runspec import RunSpec
from conftest import REPO

COMMITTED = [d for d in (REPO / "results" / "reference", REPO / "results" / "reference" / "tuning")
             if (d / "runs").is_dir()]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def _too_large(paths) -> dict[str, tuple[int, int]]:
    return {p.name: _png_size(p) for p in paths if max(_png_size(p)) > MAX_SIDE_PX}


@pytest.mark.parametrize("committed", COMMITTED, ids=lambda d: str(d.relative_to(REPO)))
def test_every_plot_of_the_committed_results_fits(committed, tmp_path):
    for part in ("runs", "samples"):
        if (committed / part).is_dir():
            # A sweep may be writing there: its temp files (.name.tmp) are not results.
            shutil.copytree(committed / part, tmp_path / part, ignore=shutil.ignore_patterns(".*"))
    written = write_plots(tmp_path)
    assert written and not _too_large(written)
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    tasks: dict[str, set] = {}
    for r in records:
        if r["status"] == "ok":
            tasks.setdefault(r["spec"]["dataset"], set()).add(r["spec"]["target_task"])
    # A dataset run with several designated tasks has one figure per task pair (`fashion-mnist [group]`).
    expected = {plot_path(tmp_path, "attackers", ds if len(ts) == 1 else f"{ds} [{t}]").name
                for ds, ts in tasks.items() for t in ts}
    names = {p.name for p in written}
    assert expected <= names and "attackers.png" not in names


def _many_configurations(res, n_configs: int, budgets: list[int]) -> None:
    """identity and `n_configs` ARL configurations, each against adaptive at every budget (one attacker
    apiece) and inversion (with saved images), seed 0."""
    defaults = DEFENSES.hparams("arl")
    configs = [("identity", {})] + [("arl", {**defaults, "lam": round(0.1 * (i + 1), 1)}) for i in range(n_configs)]
    attackers = [("adaptive", {"arch": "auto", "budget": b}) for b in budgets] + [("inversion", {})]
    images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for k, (defense, params) in enumerate(configs):
        strength = k / len(configs)
        for attacker, attacker_params in attackers:
            spec = RunSpec(defense=defense, attacker=attacker, dataset="synthetic", target_task="class",
                           attack_task="class", target_arch="cnn", seed=0, preset="smoke", defense_params=params,
                           attacker_params=attacker_params)
            metrics = {"clean_acc": 0.95, "utility_acc": 0.95 - 0.3 * strength, "agreement": 0.9,
                       "leakage": 1 - strength}
            if attacker == "inversion":
                metrics.update(psnr=25 - 10 * strength, ssim=0.9 - 0.6 * strength, psnr_chance=12.0, ssim_chance=0.3)
            else:
                metrics.update(attack_acc=0.9 - 0.5 * strength, chance=0.25,
                               attack_images=float(attacker_params["budget"]))
            write_run(res, {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": metrics,
                            "flags": {"weak_attacker": False}, "knowledge": "gray-box", "device": "cpu",
                            "preset": "smoke"})
            if attacker == "inversion":
                save_samples(res / "samples" / f"{spec.run_id}.npz",
                             {"original": images, "inverted": images * (1 - strength)})


def test_many_configurations_and_attackers_go_on_pages_that_fit(tmp_path):
    res = tmp_path / "results"
    _many_configurations(res, n_configs=30, budgets=[20, 50, 100, 200, 500, 1000])
    written = write_plots(res)
    assert not _too_large(written)
    names = {p.name for p in written}
    # 7 attackers of 30 configurations do not fit one page; 31 configurations' inversions do not fit one grid.
    assert {"attackers-synthetic.png", "attackers-synthetic-p2.png", "grid-synthetic.png",
            "grid-synthetic-p2.png", "budget-synthetic.png", "sweep-synthetic-arl-lam.png", "tradeoff.png"} <= names


def test_every_grid_page_starts_with_the_originals_its_rows_were_scored_on():
    originals = {cap: torch.rand(2, 1, 4, 4).mul(255).byte().numpy() for cap in ("", " [9 released]")}
    configs = {(cap, i, f"arl{i}{cap}"): {"original": originals[cap], "released": originals[cap],
                                          "inverted": originals[cap]}
               for cap in originals for i in range(GRID_ROWS_PER_PAGE)}
    pages = grid_pages(configs)
    assert len(pages) > 2 and all(len(page) <= GRID_ROWS_PER_PAGE for page in pages)
    for page in pages:
        assert page[0][0].startswith("original")
        # Every row on the page is scored on the originals above it.
        setting = page[0][0][len("original"):]
        assert all(title.endswith(setting) for title, _ in page)
    shown = [title for page in pages for title, _ in page if not title.startswith("original")]
    assert len(shown) == len(set(shown)) == 2 * len(configs)   # each configuration's rows once
