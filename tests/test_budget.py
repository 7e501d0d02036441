"""Attacker budget: attackers that learn from released data use at most `budget`
labelled released images, the same ones for a defense and its identity twin, and record how many."""
import json
import math

import pytest

import torch

from attackers.adaptive import Adaptive
from bench.cli import build_parser
from bench.planning import plan_specs


def test_the_subset_depends_on_seed_and_budget_only():
    attacker = Adaptive(budget=30)
    ids = torch.arange(200)
    identity_release, defended_release = torch.rand(200, 1, 4, 4), torch.rand(200, 1, 4, 4)
    _, picked_identity = attacker._within_budget(identity_release, ids, seed=3)
    _, picked_defended = attacker._within_budget(defended_release, ids, seed=3)
    assert torch.equal(picked_identity, picked_defended) and len(picked_identity) == 30
    _, other_seed = attacker._within_budget(identity_release, ids, seed=4)
    assert not torch.equal(other_seed, picked_identity)
    assert Adaptive(budget=0)._within_budget(identity_release, ids, seed=3)[1] is ids  # 0: every image


def test_a_budget_sweep_is_recorded_and_shared_with_the_identity_twin(main_inprocess, tmp_path):
    res = tmp_path / "r"
    out = main_inprocess("run", "--dataset", "synthetic", "--preset", "smoke", "--defense", "noise",
                         "--attacker", "adaptive", "--set", "adaptive.budget=40,100", "--no-plots", "--results-dir", res)
    assert out.returncode == 0, out.stdout + out.stderr
    records = [json.loads(p.read_text()) for p in (res / "runs").glob("*.json")]
    used = sorted((r["spec"]["defense"], r["spec"]["attacker_params"]["budget"], r["metrics"]["attack_images"])
                  for r in records)
    assert used == [("identity", 40, 40), ("identity", 100, 100), ("noise", 40, 40), ("noise", 100, 100)]


def test_the_default_budget_keeps_the_run_ids_recorded_before_it_existed():
    # Every released image is what all earlier records used: their specs have no `budget`.
    spec = plan_specs(build_parser().parse_args(["run", "--dataset", "synthetic", "--preset", "smoke",
                                                 "--attacker", "adaptive,inversion,attribute"]))
    assert all("budget" not in s.attacker_params for s in spec)


@pytest.mark.parametrize("budgets", [(100, 1000), (100, 1000, 10000)])
def test_the_budget_curve_is_plotted_from_three_budgets(tmp_path, budgets):
    from bench.plots.budget import budget_figures
    from bench.results.tables import aggregate, long_table
    from bench.runspec import RunSpec

    runs = []
    for budget in budgets:
        for seed in (0, 1):
            spec = RunSpec(defense="noise", attacker="adaptive", dataset="d", target_task="t", attack_task="t",
                           target_arch="cnn", seed=seed, preset="smoke", defense_params={"sigma": 0.2},
                           attacker_params={"arch": "auto", "budget": budget})
            runs.append({"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "flags": {},
                         "metrics": {"leakage": math.log10(budget) / 5 + seed / 100, "attack_images": float(budget)}})
    written = budget_figures(aggregate(long_table(runs)), tmp_path)
    if len(budgets) < 3:   # two points say nothing of how leakage grows: no near-empty panel
        assert written == [] and not list(tmp_path.glob("budget-*"))
    else:
        (path,) = written
        assert path.name == "budget-d.png" and path.stat().st_size > 10_000
