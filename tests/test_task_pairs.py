"""A task pair (designated -> private) is part of a configuration's identity in every table and figure."""
from bench.plots.write import write_plots
from bench.results.headline import headline
from bench.results.label_cost import label_costs
from bench.results.records import write_run
from bench.results.tables import aggregate, long_table, worst_case
from bench.runspec import RunSpec
from bench.views import headline as shown

PAIRS = {"class": "group", "group": "class"}


def _run(defense: str, attacker: str, target: str, seed: int, leakage: float, utility: float) -> dict:
    attack_task = PAIRS[target] if attacker == "attribute" else target
    spec = RunSpec(defense=defense, attacker=attacker, dataset="fashion-mnist", target_task=target,
                   attack_task=attack_task, target_arch="cnn", seed=seed, preset="smoke")
    metrics = {"leakage": leakage, "utility_acc": utility, "clean_acc": 0.9, "attack_acc": 0.5 * leakage,
               "chance": 0.1}
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": metrics,
            "flags": {"weak_attacker": False, "derivable": False}, "knowledge": "gray-box",
            "data_digest": f"d{seed}"}


def _runs() -> list[dict]:
    runs = []
    for seed in (0, 1):
        for target, vfc_leak in (("class", 0.9), ("group", 0.4)):
            for attacker in ("adaptive", "attribute"):
                runs += [_run("identity", attacker, target, seed, 1.0, 0.9),
                         _run("vfc", attacker, target, seed, vfc_leak, 0.88)]
    return runs


def test_every_table_keeps_two_task_pairs_of_one_configuration_apart():
    runs = _runs()
    long = long_table(runs)
    agg = aggregate(long)
    worst = worst_case(agg)
    vfc = worst[worst.defense == "vfc"].set_index("target_task")
    assert sorted(vfc.index) == ["class", "group"]
    assert vfc.loc["class", "worst_leakage"] == 0.9 and vfc.loc["group", "worst_leakage"] == 0.4
    top = headline(worst, agg, runs, costs=label_costs(long))
    # Ranked within each task pair: each pair has its own first place.
    assert sorted(top.tasks.unique()) == ["class -> group", "group -> class"]
    assert sorted(top.groupby("tasks")["rank"].min()) == [1, 1]
    assert set(shown(top).tasks) == {"class -> group", "group -> class"}


def test_figures_of_two_task_pairs_are_drawn_apart(tmp_path):
    for r in _runs():
        write_run(tmp_path, r)
    names = {p.name for p in write_plots(tmp_path)}
    attackers = sorted(n for n in names if n.startswith("attackers-fashion-mnist"))
    assert len(attackers) == 2 and "class" in attackers[0] and "group" in attackers[1], names
