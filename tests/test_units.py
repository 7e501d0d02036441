"""Fast unit tests of the harness's pieces (no dataset files)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from bench import metrics as M
from bench.artifacts import Artifacts
from bench.data.splits import make_splits, tuning_splits
from bench.data.synthetic import Synthetic
from bench.errors import BenchError
from bench.registry import ATTACKERS, DEFENSES, coerce
from bench.compare.cells import compare_sides
from bench.results.tables import aggregate, long_table, worst_case
from bench.runspec import RunSpec
from bench.storage import atomic_write_json, digest_json, load_tensors, save_tensors
from bench.sweep import configurations, parse_sets
from bench.training import TrainConfig, augment_batch, fit_classifier


# --- storage -------------------------------------------------------------------------------
def test_atomic_write_leaves_only_the_file(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


def test_tensor_roundtrip_and_corruption_detected(tmp_path):
    path = tmp_path / "t.pt"
    save_tensors(path, {"x": torch.arange(5)}, "k")
    assert torch.equal(load_tensors(path, "k")["x"], torch.arange(5))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert load_tensors(path, "k") is None


def test_tensor_without_sidecar_is_not_loaded(tmp_path):
    path = tmp_path / "t.pt"
    save_tensors(path, {"x": torch.ones(2)}, "k")
    (tmp_path / "t.pt.sha256").unlink()
    with pytest.warns(RuntimeWarning):
        assert load_tensors(path, "k") is None


def test_a_valid_file_of_another_key_is_not_loaded(tmp_path):
    """A file and its checksum copied over another key's file: valid, but not what that key asks for."""
    theirs, mine = tmp_path / "theirs.pt", tmp_path / "mine.pt"
    save_tensors(theirs, {"x": torch.ones(2)}, "release of vfc")
    save_tensors(mine, {"x": torch.zeros(2)}, "release of identity")
    for suffix in ("", ".sha256"):
        Path(str(mine) + suffix).write_bytes(Path(str(theirs) + suffix).read_bytes())
    with pytest.warns(RuntimeWarning, match="computed for another key"):
        assert load_tensors(mine, "release of identity") is None
    assert torch.equal(load_tensors(theirs, "release of vfc")["x"], torch.ones(2))


def test_digest_ignores_key_order():
    assert digest_json({"a": 1, "b": [1, 2]}) == digest_json({"b": [1, 2], "a": 1})
    assert digest_json({"a": 1}) != digest_json({"a": 2})


# --- registry and --set ----------------------------------------------------------------------
@pytest.mark.parametrize("value,default,expected", [
    ("3", 1, 3), ("0.5", 1.0, 0.5), ("true", False, True), ("no", True, False),
    ("cnn+resnet", ("a",), ("cnn", "resnet")), ("kl", "x", "kl"),
])
def test_coerce_types(value, default, expected):
    assert coerce(value, default, "p.q") == expected


@pytest.mark.parametrize("value,default", [("abc", 1), ("1.5", 2), ("maybe", True), ("x", 0.1)])
def test_coerce_rejects_ill_typed(value, default):
    with pytest.raises(BenchError, match=r"p\.q"):
        coerce(value, default, "p.q")


def test_sweep_is_the_product_of_values():
    sets = parse_sets(["finetune.budget=10,20", "finetune.epochs=1,2,3"], {"finetune": ATTACKERS})
    configs = configurations(ATTACKERS, "finetune", sets["finetune"])
    assert len(configs) == 6
    assert {(c["budget"], c["epochs"]) for c in configs} == {(b, e) for b in (10, 20) for e in (1, 2, 3)}
    assert all(c["lr"] == 1e-3 for c in configs)  # defaults filled in


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(BenchError, match="budget"):
        configurations(ATTACKERS, "finetune", {"nope": ["1"]})


def test_preset_defaults_sit_between_plugin_defaults_and_set():
    from bench.presets import get_preset

    paper = get_preset("paper").plugin_defaults["vfc"]
    (config,) = configurations(DEFENSES, "vfc", {}, paper)
    assert config["latent_dim"] == paper["latent_dim"] != DEFENSES.hparams("vfc")["latent_dim"]
    assert config["beta"] == DEFENSES.hparams("vfc")["beta"]           # untouched by the preset
    (config,) = configurations(DEFENSES, "vfc", {"latent_dim": ["8"]}, paper)
    assert config["latent_dim"] == 8                                   # --set wins
    assert get_preset("paper").dataset == "cifar100"


def test_unknown_plugin_lists_valid_ones():
    with pytest.raises(BenchError, match="identity"):
        DEFENSES.get("nope")


# --- metrics ---------------------------------------------------------------------------------
def test_accuracy_chance_agreement():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert M.accuracy(logits, y) == 0.75
    assert M.chance(y) == 0.75  # imbalanced: majority class is 1
    assert M.agreement(logits, logits.flip(1)) == 0.0


def test_leakage_and_undefined_case():
    assert M.leakage(0.55, 0.1, 1.0) == pytest.approx(0.5)
    assert M.leakage(0.1, 0.1, 0.9) == 0.0
    assert M.leakage(0.3, 0.5, 0.5) is None  # the attacker learns nothing even on identity


def test_ci95_matches_scipy_to_the_bit():
    """Exactly scipy's interval, not approximately: the committed leaderboards must regenerate byte for byte."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        for scale in (1e-3, 1.0, 100.0):
            v = rng.random(n) * scale
            ref = stats.t.interval(0.95, n - 1, loc=float(np.mean(v)), scale=stats.sem(v))
            assert M.ci95(v) == (float(ref[0]), float(ref[1]))
    assert M.ci95([0.5, 0.5]) == (0.5, 0.5)   # seeds that agree: a true zero-width interval


def test_one_seed_has_no_interval():
    assert all(math.isnan(x) for x in M.ci95([0.5]))


def test_non_finite_logits_are_an_error_not_an_accuracy():
    logits = torch.tensor([[0.1, 0.9], [float("nan"), 0.0]])
    with pytest.raises(FloatingPointError, match="1 of 2"):
        M.accuracy(logits, torch.tensor([1, 0]))


def test_image_metrics():
    x = torch.rand(4, 1, 16, 16)
    same = M.image_metrics(x, x)
    assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0)
    noisy = M.image_metrics((x + 0.2 * torch.randn_like(x)).clamp(0, 1), x)
    assert noisy["psnr"] < 20 and noisy["ssim"] < 0.9


def test_ensemble_metrics_and_relative_leakage():
    y = torch.tensor([0, 1, 0, 1])
    good = torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]])
    bad = good.flip(1)
    m = M.classifier_metrics({"a": good, "b": bad}, y)
    assert m["attack_acc.a"] == 1.0 and m["attack_acc.b"] == 0.0
    assert m["attack_acc"] == m["attack_acc_max"] == 1.0 and m["attack_acc_mean"] == 0.5
    m["chance"] = 0.5
    rel = M.relative_metrics(m, m)
    assert rel["leakage"] == 1.0 and rel["leakage.a"] == 1.0
    assert rel["leakage.b"] is None  # b is below chance even on identity: leakage undefined


def test_finite_rejects_nan():
    with pytest.raises(FloatingPointError, match="x"):
        M.finite({"x": float("nan")})
    assert M.finite({"a": 1, "b": None}) == {"a": 1.0}


# --- splits ----------------------------------------------------------------------------------
def test_splits_disjoint_deterministic_and_capped():
    data = Synthetic(n=500).load(None)
    s = make_splits(data, 0)
    parts = [set(getattr(s, k).tolist()) for k in ("owner", "attacker", "val", "test")]
    assert sum(map(len, parts)) == len(set().union(*parts))
    assert set(s.test.tolist()) == set(data.test_idx.tolist())
    assert s.digest() == make_splits(data, 0).digest() != make_splits(data, 1).digest()
    capped = make_splits(data, 0, max_owner=10, max_test=7)
    assert len(capped.owner) == 10 and len(capped.test) == 7
    tuned = tuning_splits(s)
    assert not set(tuned.test.tolist()) & set(data.test_idx.tolist())
    assert not set(tuned.test.tolist()) & set(tuned.val.tolist())


def test_splits_use_the_sources_own_val_partition():
    import dataclasses
    data = Synthetic(n=500).load(None)
    data = dataclasses.replace(data, train_idx=data.train_idx[:300], val_idx=data.train_idx[300:])
    s = make_splits(data, 0)
    assert set(s.val.tolist()) == set(data.val_idx.tolist())


# --- training --------------------------------------------------------------------------------
def test_augment_shapes_and_identity_without_shift_or_flip():
    x = torch.rand(8, 3, 12, 12)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, g, shift=0, flip=False), x)
    out = augment_batch(x, g, shift=2, flip=True)
    assert out.shape == x.shape and not torch.equal(out, x)


def _tiny_fit(seed):
    data = Synthetic(n=300).load(None)
    x, y = data.images.float() / 255, data.labels["class"]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4))
    return fit_classifier(model, x[:200], y[:200], val=(x[200:], y[200:]),
                          config=TrainConfig(epochs=10, batch_size=32, lr=1e-2, augment=False), device=torch.device("cpu"),
                          seed=seed)


def test_training_is_deterministic_per_seed_and_learns():
    a, b, c = _tiny_fit(0), _tiny_fit(0), _tiny_fit(1)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))
    data = Synthetic(n=300).load(None)
    x, y = data.images.float() / 255, data.labels["class"]
    assert M.accuracy(a(x[200:]), y[200:]) > 0.6


# --- artifacts -------------------------------------------------------------------------------
def test_artifact_built_once(tmp_path):
    store, calls = Artifacts(tmp_path), []

    def build():
        calls.append(1)
        return {"x": torch.ones(3)}

    assert torch.equal(store.get("k", {"a": 1}, build)["x"], torch.ones(3))
    assert torch.equal(Artifacts(tmp_path).get("k", {"a": 1}, build)["x"], torch.ones(3))
    assert len(calls) == 1
    Artifacts(tmp_path).get("k", {"a": 2}, build)
    assert len(calls) == 2


# --- results ---------------------------------------------------------------------------------
def _run(defense, attacker, seed, metrics, weak=False):
    spec = RunSpec(defense=defense, attacker=attacker, dataset="d", target_task="t", attack_task="t",
                   target_arch="cnn", seed=seed, preset="smoke")
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok", "metrics": metrics,
            "flags": {"weak_attacker": weak}, "knowledge": "gray-box"}


def test_leaderboard_tables():
    runs = [_run("identity", "adaptive", s, {"utility_acc": 0.9, "leakage": 1.0}) for s in (0, 1, 2)]
    runs += [_run("x", "adaptive", s, {"utility_acc": 0.8 + s / 100, "leakage": 0.2 + s / 10}) for s in (0, 1, 2)]
    runs += [_run("x", "weak", s, {"utility_acc": 0.8, "leakage": 0.9}, weak=True) for s in (0, 1, 2)]
    long = long_table(runs)
    assert long["value"].dtype == float and len(long) == 18
    agg = aggregate(long)
    row = agg[(agg.defense == "x") & (agg.attacker == "adaptive") & (agg.metric == "leakage")].iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.3) and row["std"] == pytest.approx(0.1)
    assert row["ci95_low"] < 0.3 < row["ci95_high"]
    worst = worst_case(agg).set_index("defense")
    assert worst.loc["x", "worst_leakage"] == pytest.approx(0.3)  # the weak attacker's 0.9 does not count
    assert worst.loc["x", "worst_attacker"] == "adaptive[t]"


def test_compare_flags_only_real_differences():
    a = long_table([_run("x", "adaptive", s, {"leakage": 0.2 + s / 100}) for s in (0, 1, 2)])
    b = long_table([_run("x", "adaptive", s, {"leakage": 0.8 + s / 100}) for s in (0, 1, 2)])
    assert compare_sides(a, b, same_configuration=True).matched["significant"].all()
    assert not compare_sides(a, a, same_configuration=True).matched["significant"].any()
    one_a, one_b = long_table([_run("x", "adaptive", 0, {"leakage": 0.2})]), long_table([_run("x", "adaptive", 0, {"leakage": 0.8})])
    assert not compare_sides(one_a, one_b, same_configuration=True).matched["significant"].any()  # n = 1 on both sides: no interval


def test_written_files_get_the_usual_permissions(tmp_path):
    """Not owner-only (what mkstemp makes): a results/ directory shared by a group stays readable."""
    import stat

    from bench.storage import _UMASK, atomic_write_bytes
    atomic_write_bytes(tmp_path / "f.json", b"{}")
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~_UMASK


def test_dataset_tuned_plugin_values_sit_below_set(monkeypatch):
    from bench.cli import build_parser
    from bench.planning import plan_specs
    from bench.data.synthetic import Synthetic

    monkeypatch.setattr(Synthetic, "plugin_overrides", {"smoke": {"vfc": {"latent_dim": 8, "beta": 0.5}}})
    base = ["run", "--defense", "vfc", "--attacker", "adaptive", "--dataset", "synthetic", "--preset", "smoke"]
    params = [s.defense_params for s in plan_specs(build_parser().parse_args(base)) if s.defense == "vfc"]
    assert params and all(p["latent_dim"] == 8 and p["beta"] == 0.5 for p in params)
    params = [s.defense_params for s in plan_specs(build_parser().parse_args(base + ["--set", "vfc.beta=0.1"]))
              if s.defense == "vfc"]
    assert all(p["latent_dim"] == 8 and p["beta"] == 0.1 for p in params)
    other = plan_specs(build_parser().parse_args(base[:-1] + ["default"]))  # other presets: plugin defaults
    assert all(s.defense_params["latent_dim"] == 16 for s in other if s.defense == "vfc")


def test_attacker_settings_label_their_rows():
    from bench.params import config_label
    assert config_label("transfer", json.dumps({"archs": ["cnn", "resnet", "mobilenet"]}), ATTACKERS) == "transfer"
    assert config_label("transfer", json.dumps({"archs": ["cnn"]}), ATTACKERS) == "transfer(archs=cnn)"
    assert config_label("vfc", json.dumps({"beta": 0.5})) == "vfc(beta=0.5)"


def test_labels_show_values_as_a_person_reads_them():
    """FMD declares eps and alpha in 1/255 steps; any other float is shown to 3 significant digits."""
    from bench.params import config_label
    assert config_label("fmd", json.dumps({"eps": 32 / 255, "alpha": 4 / 255})) == "fmd(eps=32/255)"
    assert config_label("fmd", json.dumps({"eps": 0.1})) == "fmd(eps=0.1)"
    assert config_label("noise", json.dumps({"sigma": 0.123456})) == "noise(sigma=0.123)"
    # A baseline shows its strength even at the default: a bare `noise` would hide it.
    assert config_label("noise", json.dumps({"sigma": 0.2})) == "noise(sigma=0.2)"
    assert config_label("jpeg", json.dumps({"quality": 25})) == "jpeg(quality=25)"
    # ... while `jpeg()` (every hyperparameter at its default) still finds it.
    from bench.params import changed_params
    assert changed_params("jpeg", json.dumps({"quality": 25})) == {}
    assert changed_params("jpeg", json.dumps({"quality": 75})) == {"quality": 75}


def test_records_written_before_a_hyperparameter_existed_keep_the_value_they_ran_with():
    # ARL's `private` arrived with default "all"; records without it learnt on the half.
    from bench.params import config_label, recorded_params
    from bench.results.tables import long_table

    old = {"lam": 1.0, "rec": "pixel"}
    assert recorded_params("arl", old) == {"private": "half", "lam": 1.0, "rec": "pixel"}
    assert recorded_params("arl", {**old, "private": "all"})["private"] == "all"
    assert recorded_params("no-such-defense", old) == old
    spec = {"defense": "arl", "defense_params": old, "attacker": "inversion", "attacker_params": {},
            "dataset": "celeba", "target_task": "Smiling", "attack_task": "Smiling", "target_arch": "cnn",
            "preset": "default", "seed": 0}
    long = long_table([{"run_id": "x", "status": "ok", "spec": spec, "metrics": {"psnr": 20.0}}])
    assert config_label("arl", long.defense_params[0]) == "arl(private=half)"


def test_derivability_tells_a_coarsening_from_an_independent_task():
    from bench import metrics as M

    g = torch.Generator().manual_seed(0)
    designated = torch.randint(0, 10, (2000,), generator=g)
    coarse = (designated >= 5).long()                     # e.g. CIFAR-10's vehicle: one value per class
    independent = torch.randint(0, 2, (2000,), generator=g)  # e.g. an attribute unrelated to the class
    assert M.derivability(designated, coarse) == 1.0 >= M.DERIVABLE_AT
    assert M.derivability(designated, independent) < 0.6
    noisy = coarse.clone()
    noisy[:40] = 1 - noisy[:40]                           # 2 % of images break the rule
    assert M.derivability(designated, noisy) == pytest.approx(0.98, abs=0.005)
    assert M.derivability(designated, noisy) < M.DERIVABLE_AT


def test_derivable_attackers_stay_in_the_tables_but_out_of_the_worst_case():
    def run(attacker, task, leak, derivable):
        r = _run("x", attacker, 0, {"leakage": leak, "utility_acc": 0.9})
        r["spec"]["attack_task"] = task
        r["flags"] = {"weak_attacker": False, "derivable": derivable}
        return r

    long = long_table([run("adaptive", "class", 0.4, False), run("attribute", "group", 0.99, True)])
    agg = aggregate(long)
    assert set(agg[agg.metric == "leakage"].attacker) == {"adaptive", "attribute"}
    (row,) = worst_case(agg).itertuples()
    assert row.worst_leakage == 0.4 and row.worst_attacker == "adaptive[class]" and row.n_attackers == 1
