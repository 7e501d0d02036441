"""Label cost: the labelled releases an attacker needs, over those it needs on raw images."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.results.keys import LONG_COLUMNS
from bench.results.label_cost import cheapest, cost_text, label_costs, reach

BUDGETS = (100, 1000, 10_000, 40_000)


def curve_rows(defense: str, score, budgets=BUDGETS, seeds=(0, 1, 2), attacker: str = "adaptive",
               params: str = "{}", weak: bool = False) -> list[dict]:
    """Long-table rows of one configuration's budget curve: `score(images, seed)` at each budget."""
    rows = []
    for seed in seeds:
        for b in budgets:
            base = {"run_id": f"{defense}{params}{attacker}{b}{seed}", "defense": defense, "defense_params": params,
                    "attacker": attacker, "attacker_params": json.dumps({"budget": b}), "knowledge": "gray-box",
                    "dataset": "d", "target_task": "group", "attack_task": "class", "target_arch": "cnn",
                    "preset": "smoke", "eval_split": "test", "max_release": 0, "seed": seed,
                    "weak_attacker": weak, "derivable": False}
            metric = "ssim" if attacker == "inversion" else "attack_acc"
            rows += [{**base, "metric": metric, "value": score(b, seed)},
                     {**base, "metric": "attack_images", "value": float(b)}]
    return rows


def table(*parts) -> pd.DataFrame:
    return pd.DataFrame([r for part in parts for r in part], columns=LONG_COLUMNS)


def identity_score(b, seed=0):
    return 0.2 + 0.15 * math.log10(b) + 0.001 * seed   # linear in log budget: interpolation is exact


def cost_of(costs: pd.DataFrame, defense: str, q: float = 0.9) -> pd.Series:
    return costs[(costs.defense == defense) & (costs.q == q)].iloc[0]


def test_a_curve_shifted_four_times_in_budget_costs_four():
    shifted = curve_rows("vfc", lambda b, s: identity_score(b / 4, s), budgets=BUDGETS + (160_000,))
    costs = label_costs(table(curve_rows("identity", identity_score), shifted))
    vfc = cost_of(costs, "vfc")
    assert vfc.label_cost == pytest.approx(4.0, rel=1e-9) and not vfc.bound and vfc.n == 3
    assert vfc.ci95_low == pytest.approx(4.0) and vfc.ci95_high == pytest.approx(4.0)


def test_identity_costs_one_by_construction():
    costs = label_costs(table(curve_rows("identity", identity_score)))
    assert (costs.label_cost == 1.0).all() and set(costs.q) == {0.8, 0.9, 0.95}


def test_a_curve_that_never_reaches_the_goal_gives_a_lower_bound():
    flat = curve_rows("vfc", lambda b, s: 0.6)
    vfc = cost_of(label_costs(table(curve_rows("identity", identity_score), flat)), "vfc")
    assert vfc.bound
    # The largest budget it ran over the identity's number at the goal: a lower bound on the true cost.
    goals = [0.9 * identity_score(40_000, seed) for seed in (0, 1, 2)]
    bounds = [40_000 / 10 ** ((goal - 0.2 - 0.001 * seed) / 0.15) for seed, goal in enumerate(goals)]
    assert vfc.label_cost == pytest.approx(np.mean(bounds), rel=1e-9)
    assert cost_text(vfc.label_cost, vfc.bound).startswith(">= ")


def test_the_cost_grows_with_the_share_of_full_accuracy_asked_for():
    slower = curve_rows("vfc", lambda b, s: 0.2 + 0.12 * math.log10(b), budgets=BUDGETS + (10**6, 10**7))
    costs = label_costs(table(curve_rows("identity", identity_score), slower))
    by_q = [cost_of(costs, "vfc", q) for q in (0.8, 0.9, 0.95)]
    assert not any(c.bound for c in by_q)
    costs = [c.label_cost for c in by_q]
    assert costs == sorted(costs) and costs[0] < costs[-1]


def test_an_identity_already_at_the_goal_at_its_smallest_budget_leaves_the_cost_unresolved():
    easy = curve_rows("identity", lambda b, s: 0.9)
    vfc = cost_of(label_costs(table(easy, curve_rows("vfc", lambda b, s: 0.85))), "vfc")
    assert math.isnan(vfc.label_cost) and cost_text(vfc.label_cost, vfc.bound) == ""


def test_inversion_is_scored_by_ssim_and_weak_cells_are_not_the_cheapest_route():
    rows = table(curve_rows("identity", identity_score, attacker="inversion"),
                 curve_rows("vfc", lambda b, s: identity_score(b / 4, s), budgets=BUDGETS + (160_000,),
                            attacker="inversion"),
                 curve_rows("identity", identity_score, weak=True),
                 curve_rows("vfc", lambda b, s: identity_score(b, s), weak=True))
    costs = label_costs(rows)
    (route,) = [v for key, v in cheapest(costs).items() if key[0] == "vfc"]
    # adaptive (weak) costs 1 and would be cheaper; only the calibrated inversion counts.
    assert route["label_cost_attacker"] == "inversion[class]"
    assert route["label_cost"] == pytest.approx(4.0)


def test_reach_interpolates_on_log_budget():
    images, scores = np.array([100.0, 10_000.0]), np.array([0.2, 0.6])
    assert reach(images, scores, 0.4) == (pytest.approx(1000.0), "")
    assert reach(images, scores, 0.1) == (100.0, "below")
    assert reach(images, scores, 0.7) == (10_000.0, "above")


def test_the_summary_says_which_defense_costs_more_labels_than_its_baseline_and_by_how_much():
    from bench.views import label_cost_summary

    top = pd.DataFrame([
        {"dataset": "d", "tasks": "group -> class", "rank": 1, "config": "vfc", "label_cost": 6.0,
         "label_cost_ci95_low": 5.0, "label_cost_ci95_high": 7.0, "label_cost_bound": False,
         "label_cost_attacker": "adaptive[class]", "baseline": "jpeg(quality=25)", "baseline_label_cost": 1.5,
         "baseline_label_cost_ci95_low": 1.0, "baseline_label_cost_ci95_high": 2.0,
         "baseline_label_cost_bound": False},
        {"dataset": "d", "tasks": "group -> class", "rank": 2, "config": "arl", "label_cost": 1.7,
         "label_cost_ci95_low": 1.2, "label_cost_ci95_high": 2.2, "label_cost_bound": False,
         "label_cost_attacker": "attribute[class]", "baseline": "jpeg(quality=25)", "baseline_label_cost": 1.5,
         "baseline_label_cost_ci95_low": 1.0, "baseline_label_cost_ci95_high": 2.0,
         "baseline_label_cost_bound": False},
        {"dataset": "d", "tasks": "group -> class", "rank": 3, "config": "fmd", "label_cost": 0.5,
         "label_cost_ci95_low": 0.4, "label_cost_ci95_high": 0.6, "label_cost_bound": False,
         "label_cost_attacker": "adaptive[group]", "baseline": math.nan, "baseline_label_cost": math.nan,
         "baseline_label_cost_ci95_low": math.nan, "baseline_label_cost_ci95_high": math.nan,
         "baseline_label_cost_bound": False}])
    text = label_cost_summary(top)
    assert ("`fmd` costs the cheapest attacker (adaptive[group]) 0.5 x the labels it needs on raw images; "
            "no baseline reaches its utility, so it stands beside no baseline.") in text
    assert "`vfc` costs the cheapest attacker (adaptive[class]) 6.0 x" in text
    assert "more than the baseline, 4.0 x its cost (the 95 % intervals are disjoint)" in text
    assert "`arl`" in text and "not told apart from the baseline (1.1 x its cost; the 95 % intervals overlap)" in text
    none = label_cost_summary(top.assign(baseline_label_cost=math.nan))
    assert none.startswith("No ranked defense's label cost stands beside")
    assert "`vfc` on d (group -> class): 6.0" in none


def test_a_claim_compares_the_label_costs_of_a_defense_and_a_baseline(tmp_path):
    from bench.claims import judge, labelled, load_claims
    from bench.results.tables import aggregate

    def own_budget_last(rows):
        """The largest budget run as the attacker's own (budget 0: every released image), as the reference does."""
        top = max(json.loads(r["attacker_params"])["budget"] for r in rows)
        return [{**r, "attacker_params": json.dumps({"budget": 0})}
                if json.loads(r["attacker_params"])["budget"] == top else r for r in rows]

    budgets = BUDGETS + (160_000,)
    long = table(*(own_budget_last(curve_rows(d, score, budgets=budgets)) for d, score in (
        ("identity", identity_score),
        ("vfc", lambda b, s: identity_score(b / (3 + 0.1 * s), s)),   # 3, 3.1 and 3.2 times the labels
        ("jpeg", lambda b, s: identity_score(b / (1.1 + 0.01 * s), s)))))
    cells = labelled(aggregate(long), label_costs(long))
    vfc = cells[(cells.defense == "vfc") & (cells.metric == "label_cost")]
    assert len(vfc) == 1 and vfc.iloc[0]["mean"] == pytest.approx(3.1)
    assert vfc.iloc[0].attacker_params == '{"budget": 0}'
    claims = tmp_path / "claims.csv"
    claims.write_text("paper,claim,paper_value,setting,dataset,config,attacker,attack_task,metric,compare_to,show,rule,"
                      "verdict_if_true,verdict_if_false\n"
                      "VFC,costs more labels,,s,d,vfc,adaptive,class,label_cost,jpeg,label_cost_bound,"
                      "ci95_low > other_ci95_high,yes,no\n"
                      "VFC,costs more labels,,s,d,jpeg,adaptive,class,label_cost,vfc,,"
                      "ci95_low > other_ci95_high,yes,no\n")
    more, less = judge(load_claims(claims), {"main": cells})
    assert (more.outcome, less.outcome) == ("true", "false")
    assert "label_cost_bound 0.000" in more.measured


def test_a_full_budget_record_made_before_images_were_counted_joins_its_curve():
    from bench.runspec import RunSpec
    from bench.results.tables import long_table

    spec = RunSpec("vfc", "adaptive", "synthetic", "class", "class", "cnn", 0, "smoke")
    record = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": {"attack_acc": 0.5},
              "splits": {"attacker": 1234}}
    long = long_table([record])
    assert long[long.metric == "attack_images"].value.tolist() == [1234.0]
    counted = {**record, "metrics": {"attack_acc": 0.5, "attack_images": 99.0}}
    assert long_table([counted]).query("metric == 'attack_images'").value.tolist() == [99.0]
