"""The headline ranking: within the utility floor and against the full attacker set,
ranked by worst case, with the utility-matched baseline beside each configuration."""
import math

from bench.results.headline import headline
from bench.results.tables import aggregate, long_table, worst_case
from bench.runspec import RunSpec


def _run(defense, attacker, seed, leakage, utility, params=None, status="ok"):
    spec = RunSpec(defense=defense, attacker=attacker, dataset="d", target_task="t", attack_task="t",
                   target_arch="cnn", seed=seed, preset="smoke", defense_params=params or {})
    metrics = {"leakage": leakage, "utility_acc": utility, "clean_acc": 0.9} if status == "ok" else {}
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": status, "metrics": metrics,
            "flags": {"weak_attacker": False}, "knowledge": "gray-box"}


def _table(runs, floor=0.95):
    agg = aggregate(long_table(runs))
    return headline(worst_case(agg), agg, runs, floor).set_index("config")


def _grid():
    runs = []
    for seed in (0, 1):
        runs += [_run("identity", a, seed, 1.0, 0.9) for a in ("adaptive", "inversion")]
        runs += [_run("vfc", "adaptive", seed, 0.5, 0.88), _run("vfc", "inversion", seed, 0.7, 0.88)]
        runs += [_run("alpha", "adaptive", seed, 0.3, 0.89), _run("alpha", "inversion", seed, 0.2, 0.89)]
        runs += [_run("gamma", "adaptive", seed, 0.1, 0.5), _run("gamma", "inversion", seed, 0.1, 0.5)]  # no utility left
        runs += [_run("vfc", "adaptive", seed, 0.05, 0.9, {"beta": 1.0})]                       # fewer attackers
        runs += [_run("noise", "adaptive", seed, 0.6, 0.895, {"sigma": 0.1}),
                 _run("noise", "inversion", seed, 0.4, 0.895, {"sigma": 0.1}),
                 _run("noise", "adaptive", seed, 0.2, 0.80, {"sigma": 0.5}),
                 _run("noise", "inversion", seed, 0.1, 0.80, {"sigma": 0.5})]
    return runs


def test_ranked_by_worst_case_within_the_floor_and_the_full_attacker_set():
    t = _table(_grid())
    ranked = t[t["rank"].notna()].sort_values("rank")
    assert list(ranked.index) == ["alpha", "noise(sigma=0.1)", "vfc", "identity"]
    assert t.loc["alpha", "worst_leakage"] == 0.3 and t.loc["alpha", "worst_attacker"] == "adaptive[t]"
    assert t.loc["gamma", "listed_apart"] == "utility below 0.95 x clean"
    assert t.loc["vfc(beta=1)", "listed_apart"] == "fewer attackers (no inversion)"
    assert t.loc["noise(sigma=0.5)", "listed_apart"].startswith("utility below")
    assert (t["n_seeds"] == 2).all()


def test_the_utility_matched_baseline_stands_beside_each_configuration():
    t = _table(_grid())
    # vfc (utility 0.88): the ranked noise at 0.895 >= 0.88 is its floor. alpha (0.89) likewise.
    assert t.loc["vfc", "baseline"] == "noise(sigma=0.1)" and t.loc["vfc", "baseline_worst_leakage"] == 0.6
    assert t.loc["alpha", "baseline"] == "noise(sigma=0.1)"
    # identity (0.9) is above every baseline's utility: no match, never a baseline of lower utility.
    assert t.loc["identity", "baseline"] == "" and math.isnan(t.loc["identity", "baseline_worst_leakage"])


def test_not_applicable_counts_as_evaluated():
    runs = _grid() + [_run("alpha", "transfer", s, 0, 0, status="not_applicable") for s in (0, 1)]
    t = _table(runs, floor=0.5)
    # Only alpha met `transfer` (not applicable to it): every other configuration now ran against fewer,
    # whatever the floor.
    assert t.loc["gamma", "listed_apart"] == "fewer attackers (no transfer)"
    assert t.loc["alpha", "rank"] == 1 and t.loc["vfc", "listed_apart"] == "fewer attackers (no transfer)"


def test_a_baseline_run_against_fewer_attackers_is_compared_over_the_attackers_both_met():
    # blur met only adaptive (CIFAR-10's baselines meet 3 of 5 attackers): it is vfc's floor over
    # adaptive alone, and the table says so with vfc's own worst case over that set.
    runs = _grid() + [_run("blur", "adaptive", s, 0.45, 0.95, {"sigma": 1}) for s in (0, 1)]
    t = _table(runs)
    assert t.loc["blur(sigma=1)", "listed_apart"] == "fewer attackers (no inversion)"
    assert t.loc["identity", "baseline"] == "blur(sigma=1)"
    assert t.loc["identity", "baseline_compared_over"] == "adaptive"
    assert t.loc["identity", "worst_leakage_vs_baseline"] == 1.0
    # A baseline met on every attacker of the configuration beats a partial one, even one with a lower worst case.
    assert t.loc["vfc", "baseline"] == "noise(sigma=0.1)" and t.loc["vfc", "baseline_compared_over"] == ""
    assert t.loc["vfc", "worst_leakage_vs_baseline"] == t.loc["vfc", "worst_leakage"] == 0.7


def test_a_partial_baseline_is_compared_over_the_shared_attackers_only():
    runs = [r for r in _grid() if r["spec"]["defense"] != "noise"]
    runs += [_run("pixelate", "inversion", s, 0.9, 0.9, {"block": 4}) for s in (0, 1)]
    t = _table(runs)
    # vfc (adaptive 0.5, inversion 0.7) is compared over inversion only; alpha (0.3, 0.2) likewise.
    assert t.loc["vfc", "baseline"] == "pixelate(block=4)"
    assert t.loc["vfc", "baseline_worst_leakage"] == 0.9 and t.loc["vfc", "baseline_compared_over"] == "inversion"
    assert t.loc["vfc", "worst_leakage_vs_baseline"] == 0.7
    assert t.loc["alpha", "worst_leakage_vs_baseline"] == 0.2 and t.loc["alpha", "worst_leakage"] == 0.3


def test_utility_is_matched_as_a_fraction_of_clean_accuracy():
    # "capped" is scored on a harder test subset (clean 0.85): its 0.85 is all of its clean accuracy,
    # while noise's 0.895 is 0.994 of its clean 0.9. Raw accuracy would match them; the ratio does not.
    runs = _grid()
    for seed in (0, 1):
        for a in ("adaptive", "inversion"):
            run = _run("capped", a, seed, 0.9, 0.85)
            run["metrics"]["clean_acc"] = 0.85
            runs.append(run)
    t = _table(runs)
    assert t.loc["capped", "utility_ratio"] == 1.0 and t.loc["capped", "baseline"] == ""
    assert t.loc["vfc", "baseline_utility_ratio"] == 0.895 / 0.9


# --- a user's results dir beside the reference results ----------------------------------------------
def _write(root, runs, digest="same"):
    from bench.results.records import write_run

    for r in runs:
        write_run(root, {**r, "data_digest": f"{digest}-{r['spec']['seed']}"})
    return root


def test_a_dir_with_only_its_defense_borrows_the_baseline_of_the_reference_on_the_same_data(tmp_path):
    from bench.results.leaderboards import write_leaderboards
    from bench.views import headline as shown, missing_baselines

    reference = _write(tmp_path / "reference", _grid())
    mine = [r for r in _grid() if r["spec"]["defense"] in ("identity", "alpha")]
    top = write_leaderboards(_write(tmp_path / "mine", mine), reference=reference)["headline"].set_index("config")
    assert top.loc["alpha", "baseline"] == "noise(sigma=0.1)"
    assert top.loc["alpha", "baseline_source"] == "reference results"
    assert shown(top.reset_index()).set_index("config").loc["alpha", "baseline"] == \
        "noise(sigma=0.1) (reference results)"
    assert not missing_baselines(top.reset_index())
    # Written to the CSV the report reads, with its source.
    assert "reference results" in (tmp_path / "mine" / "leaderboard_headline.csv").read_text()


def test_no_baseline_is_borrowed_from_other_data_and_the_command_for_one_is_named(tmp_path):
    from bench.results.leaderboards import write_leaderboards
    from bench.views import missing_baselines

    reference = _write(tmp_path / "reference", _grid(), digest="other")
    mine = [r for r in _grid() if r["spec"]["defense"] in ("identity", "alpha")]
    top = write_leaderboards(_write(tmp_path / "mine", mine), reference=reference)["headline"]
    assert (top.baseline == "").all()
    (note,) = missing_baselines(top)
    assert note.startswith("no utility-matched baseline for alpha on d: python -m bench run --dataset d --defense ")
    assert "--attacker all --seeds 0-1" in note and "jpeg" in note


def test_own_baselines_are_never_replaced_by_borrowed_ones(tmp_path):
    from bench.results.leaderboards import write_leaderboards

    reference = _write(tmp_path / "reference", _grid())
    mine = [r for r in _grid() if r["spec"]["defense"] in ("identity", "alpha")
            or r["spec"]["defense_params"] == {"sigma": 0.5}]
    top = write_leaderboards(_write(tmp_path / "mine", mine), reference=reference)["headline"].set_index("config")
    # noise(sigma=0.5) is below alpha's utility, so alpha has no match; the reference's sigma=0.1 is not used.
    assert top.loc["alpha", "baseline"] == "" and top.loc["alpha", "baseline_source"] == ""


def test_each_row_names_its_defense_apart_from_its_label():
    t = _table(_grid())
    assert t.loc["noise(sigma=0.1)", "defense"] == "noise" and t.loc["vfc(beta=1)", "defense"] == "vfc"
    assert t.loc["identity", "defense"] == "identity"


def test_the_readme_headline_holds_defenses_proper():
    from bench.generated_docs import _defended
    t = _table(_grid()).reset_index()
    assert set(_defended(t).defense) == {"vfc", "alpha", "gamma"}


def _capped(defense, attacker, seed, leakage, weak):
    run = _run(defense, attacker, seed, leakage, 0.9)
    spec = RunSpec.from_dict({**run["spec"], "max_release": 500})
    return {**run, "run_id": spec.run_id, "spec": spec.to_dict(), "flags": {"weak_attacker": weak}}


def test_a_release_cap_that_leaves_an_attacker_uncalibrated_lists_the_configuration_apart():
    runs = _grid()
    for seed in (0, 1):
        runs += [_capped(d, "adaptive", seed, 1.0 if d == "identity" else 0.1, weak=True) for d in ("identity", "fmd")]
        runs += [_capped(d, "inversion", seed, 1.0 if d == "identity" else 0.15, weak=False)
                 for d in ("identity", "fmd")]
    t = _table(runs)
    # fmd's worst case (0.15) counts inversion alone: adaptive, which every uncapped configuration is
    # held to, is too weak at 500 released images to say anything.
    assert t.loc["fmd [500 released]", "worst_leakage"] == 0.15
    assert t.loc["fmd [500 released]", "listed_apart"] == "attackers uncalibrated at its release cap (adaptive)"
    assert t.loc["identity [500 released]", "listed_apart"] == "attackers uncalibrated at its release cap (adaptive)"
    assert list(t[t["rank"].notna()].sort_values("rank").index) == ["alpha", "noise(sigma=0.1)", "vfc", "identity"]
