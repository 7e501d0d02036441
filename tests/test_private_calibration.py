"""Attackers on a private task are calibrated against the uncapped identity attacker on that task."""
import json

import pandas as pd

from bench.results.calibration import flag_weak_private_attackers
from bench.results.keys import LONG_COLUMNS
from bench.results.tables import aggregate, worst_case


def run_rows(defense: str, attack_acc: float, *, max_release: int = 0, seed: int = 0, attacker: str = "attribute",
             budget: int | None = None, attack_task: str = "class", weak: bool = False) -> list[dict]:
    params = {"arch": "auto", **({} if budget is None else {"budget": budget})}
    base = {"run_id": f"{defense}{max_release}{attacker}{budget}{attack_task}{seed}", "defense": defense,
            "defense_params": "{}", "attacker": attacker, "attacker_params": json.dumps(params, sort_keys=True),
            "knowledge": "gray-box", "dataset": "d", "target_task": "group", "attack_task": attack_task,
            "target_arch": "cnn", "preset": "smoke", "eval_split": "test", "max_release": max_release,
            "seed": seed, "weak_attacker": weak, "derivable": False}
    leakage = 1.0 if defense == "identity" else 0.5
    return [{**base, "metric": "attack_acc", "value": attack_acc}, {**base, "metric": "leakage", "value": leakage},
            {**base, "metric": "utility_acc", "value": 0.9}]


def table(*parts) -> pd.DataFrame:
    return pd.DataFrame([r for part in parts for r in part], columns=LONG_COLUMNS)


def weak_runs(long: pd.DataFrame) -> set[tuple]:
    flagged = flag_weak_private_attackers(long)
    return set(flagged[flagged.weak_attacker][["defense", "max_release", "seed"]].itertuples(index=False, name=None))


def test_a_release_cap_that_starves_the_identity_twin_flags_it_and_every_run_it_calibrates():
    long = table(run_rows("identity", 0.80), run_rows("identity", 0.60, max_release=500),
                 run_rows("fmd", 0.30, max_release=500))
    assert weak_runs(long) == {("identity", 500, 0), ("fmd", 500, 0)}


def test_a_twin_within_ninety_percent_of_the_uncapped_attacker_is_calibrated():
    long = table(run_rows("identity", 0.80), run_rows("identity", 0.73, max_release=500),
                 run_rows("fmd", 0.30, max_release=500))
    assert weak_runs(long) == set()


def test_each_seed_is_held_to_its_own_uncapped_run():
    long = table(run_rows("identity", 0.80, seed=0), run_rows("identity", 0.60, seed=1),
                 run_rows("identity", 0.70, max_release=500, seed=0), run_rows("identity", 0.70, max_release=500, seed=1))
    assert weak_runs(long) == {("identity", 500, 0)}


def test_a_point_of_a_budget_curve_is_held_to_the_attacker_at_its_own_budget():
    long = table(run_rows("identity", 0.80), run_rows("identity", 0.50, budget=100),
                 run_rows("vfc", 0.20, budget=100), run_rows("identity", 0.79, budget=3000))
    flagged = flag_weak_private_attackers(long)
    weak = flagged[flagged.weak_attacker]
    assert set(weak.attacker_params) == {json.dumps({"arch": "auto", "budget": 100})}
    assert set(weak.defense) == {"identity", "vfc"}


def test_without_an_uncapped_run_nothing_is_flagged():
    long = table(run_rows("identity", 0.10, max_release=500), run_rows("fmd", 0.05, max_release=500))
    assert weak_runs(long) == set()


def test_the_designated_task_keeps_the_flag_its_run_decided():
    long = table(run_rows("identity", 0.95, attack_task="group"),
                 run_rows("identity", 0.40, max_release=500, attack_task="group"),
                 run_rows("identity", 0.40, max_release=500, attack_task="group", attacker="adaptive", weak=True))
    flagged = flag_weak_private_attackers(long)
    assert flagged.weak_attacker.tolist() == long.weak_attacker.tolist()


def test_a_starved_private_attacker_no_longer_decides_the_worst_case():
    long = table(run_rows("identity", 0.80), run_rows("identity", 0.60, max_release=500),
                 run_rows("fmd", 0.58, max_release=500),
                 run_rows("identity", 0.95, max_release=500, attacker="adaptive", attack_task="group"),
                 run_rows("fmd", 0.70, max_release=500, attacker="adaptive", attack_task="group"))
    long.loc[(long.defense == "fmd") & (long.attacker == "attribute") & (long.metric == "leakage"), "value"] = 1.3
    worst = worst_case(aggregate(flag_weak_private_attackers(long)))
    fmd = worst[worst.defense == "fmd"].iloc[0]
    assert fmd.worst_attacker.startswith("adaptive") and fmd.worst_leakage == 0.5
