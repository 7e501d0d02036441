"""FMD (feature-map distortion) and what it needs from the harness: labels at release,
and the release cap for costly defenses that the identity twin shares."""
import pytest
import torch
import torch.nn.functional as F

from bench.artifacts import Artifacts
from bench.cli import build_parser, plan_specs
from bench.data.synthetic import Synthetic
from bench.models import build_classifier
from bench.pipeline import Stage
from bench.presets import get_preset
from bench.protocol import DataSpec, FitData
from bench.runspec import RunSpec
from bench.training import TrainConfig, as_float, fit_classifier
from defenses.fmd import FMD, capture_output, default_feature_layer

CPU = torch.device("cpu")
TINY = TrainConfig(epochs=2, batch_size=32, augment=False)
STEPS = 8  # enough to see the optimisation work, cheap enough for many releases


@pytest.fixture(autouse=True)
def one_thread():
    # FMD's steps on 16 px batches are too small to split across threads; on a shared,
    # busy machine two contending threads made this file ~50x slower than one.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)  # module scope: set up before the per-test fixture above
    data = Synthetic(n=200, size=16).load(None)
    x, y = as_float(data.images), data.labels["class"]
    torch.manual_seed(0)
    target = fit_classifier(build_classifier("cnn", data.image_shape, 4), x[:120], y[:120],
                            val=(x[120:160], y[120:160]), config=TINY, device=CPU, seed=0)
    spec = DataSpec(data.image_shape, 4, "class")
    fit = FitData(x[:120], y[:120], x[120:160], y[120:160], spec, CPU, TINY)
    return target, fit, x[160:184], y[160:184]


def fitted(world, seed=0, **hparams):
    target, fit, _, _ = world
    return FMD(**{"steps": STEPS, **hparams}).fit(fit, target, seed=seed)


def distortion(defense, x, released):
    """Per image MSE between the designated model's features of x and of the released image."""
    with torch.no_grad(), capture_output(dict(defense.target_.named_modules())[defense.layer_]) as feature:
        defense.target_(x)
        clean = feature["out"]
        defense.target_(released)
        return (feature["out"] - clean).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("label_source", ["pred", "gt"])
def test_release_stays_in_the_eps_ball_and_in_range(world, label_source):
    _, _, x, y = world
    defense = fitted(world, label_source=label_source, eps=8 / 255, alpha=2 / 255)
    released = defense.release(x, y)
    assert released.shape == x.shape
    assert (released - x).abs().max() <= 8 / 255 + 1e-6
    assert released.min() >= 0 and released.max() <= 1
    assert not torch.equal(released, x)


def test_designated_model_is_never_changed(world):
    target, _, x, y = world
    before = {k: v.clone() for k, v in target.state_dict().items()}
    fitted(world, label_source="gt").release(x, y)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    assert not any(p.requires_grad for p in target.parameters())


def test_gt_labels_are_required_and_checked(world):
    _, _, x, y = world
    defense = fitted(world, label_source="gt")
    assert defense.needs_labels and not FMD(label_source="pred").needs_labels
    with pytest.raises(ValueError, match="labels"):
        defense.release(x)
    with pytest.raises(ValueError, match="labels"):
        defense.release(x, y[:-1])


def test_bad_hyperparameters_name_the_valid_choices(world):
    with pytest.raises(ValueError, match="valid choices: pred, gt"):
        fitted(world, label_source="truth")
    with pytest.raises(ValueError, match=r"valid choices: .*\b4\.0\b"):
        fitted(world, layer="conv99")


def test_deterministic_batch_independent_and_seeded(world):
    _, _, x, y = world
    defense = fitted(world)
    released = defense.release(x, y)
    assert torch.equal(defense.release(x, y), released)
    halves = torch.cat([defense.release(x[:7], y[:7]), defense.release(x[7:], y[7:])])
    assert torch.equal(halves, released)
    # The random start depends on the run's seed, which survives the artifact cache.
    assert not torch.equal(fitted(world, seed=1).release(x, y), released)
    target, fit, _, _ = world
    restored = FMD(steps=STEPS).restore(defense.state_dict(), target, fit.spec, CPU)
    assert torch.equal(restored.release(x, y), released)


def test_steps_zero_is_the_random_start(world):
    _, _, x, y = world
    start = fitted(world, steps=0).release(x, y)
    noise = start - x
    assert noise.abs().max() <= 16 / 255 + 1e-6 and noise.abs().max() > 8 / 255
    assert torch.equal(fitted(world, steps=0).release(x, y), start)


def test_steps_increase_the_feature_distortion_and_lam_keeps_the_label(world):
    _, _, x, y = world
    start = fitted(world, steps=0)
    optimised = fitted(world, lam=0.0)
    grown = distortion(optimised, x, optimised.release(x, y))
    assert (grown > distortion(start, x, start.release(x, y))).all()

    # A large lam trades distortion for the designated model's loss on its own label.
    clean_pred = optimised.target_(x).argmax(1)
    kept = fitted(world, lam=100.0)
    released = {"lam0": optimised.release(x, y), "lam100": kept.release(x, y)}
    ce = {k: F.cross_entropy(optimised.target_(r), clean_pred).item() for k, r in released.items()}
    assert ce["lam100"] < ce["lam0"]
    assert (optimised.target_(released["lam100"]).argmax(1) == clean_pred).all()


def test_default_layer_is_the_last_conv_block_before_pooling():
    shape = (1, 28, 28)
    assert default_feature_layer(build_classifier("cnn", shape, 10)) == "4"
    assert default_feature_layer(build_classifier("resnet", shape, 10)) == "layer4"
    assert default_feature_layer(build_classifier("mobilenet", shape, 10)) == "blocks"
    with pytest.raises(ValueError, match="fmd.layer"):
        default_feature_layer(build_classifier("mlp", shape, 10))


def test_an_earlier_layer_can_be_named(world):
    _, _, x, y = world
    defense = fitted(world, layer="2.0")  # the second block's convolution
    assert defense.layer_ == "2.0"
    assert (defense.release(x, y) - x).abs().max() <= 16 / 255 + 1e-6


# --- the harness side: release cap and run ids ---------------------------------------------

SPEC = dict(attacker="adaptive", dataset="synthetic", target_task="class", attack_task="class",
            target_arch="cnn", seed=0, preset="smoke")


def test_run_id_of_uncapped_specs_is_unchanged():
    spec = RunSpec(defense="identity", **SPEC)
    assert spec.run_id == "dda8819123f8cad4"  # computed before RunSpec had max_release
    assert "max_release" not in spec.to_dict()
    assert RunSpec.from_dict(spec.to_dict()) == spec
    capped = RunSpec(defense="fmd", max_release=64, **SPEC)
    assert capped.to_dict()["max_release"] == 64 and RunSpec.from_dict(capped.to_dict()) == capped
    assert capped.on_identity({}).max_release == 64


def test_plan_caps_only_costly_defenses():
    args = build_parser().parse_args(["run", "--defense", "fmd,identity", "--attacker", "adaptive",
                                      "--dataset", "synthetic", "--preset", "smoke"])
    caps = {s.defense: s.max_release for s in plan_specs(args)}
    assert caps == {"fmd": get_preset("smoke").max_costly_release, "identity": None}
    args = build_parser().parse_args(["run", "--defense", "fmd,identity", "--attacker", "adaptive",
                                      "--dataset", "synthetic", "--preset", "smoke", "--max-release", "10"])
    assert {s.defense: s.max_release for s in plan_specs(args)} == {"fmd": 10, "identity": None}


def test_capped_run_and_its_identity_twin_release_the_same_subset():
    cap = 16
    capped = Stage.open(RunSpec(defense="fmd", max_release=cap, **SPEC), None, CPU, Artifacts())
    twin = Stage.open(RunSpec(defense="fmd", max_release=cap, **SPEC).on_identity({}), None, CPU, Artifacts())
    plain = Stage.open(RunSpec(defense="identity", **SPEC), None, CPU, Artifacts())
    assert capped.splits.sizes() == twin.splits.sizes() and capped.splits.digest() == twin.splits.digest()
    sizes = capped.splits.sizes()
    assert sizes["owner"] == plain.splits.sizes()["owner"]
    assert all(sizes[s] == cap for s in ("attacker", "val", "test"))
    for s in ("attacker", "val", "test"):
        assert set(getattr(capped.splits, s).tolist()) <= set(getattr(plain.splits, s).tolist())
    # The designated model is trained on the whole splits: the same one uncapped runs get.
    assert capped.target_key() == plain.target_key()


def test_pipeline_releases_with_the_designated_labels():
    spec = RunSpec(defense="fmd", defense_params={"label_source": "gt", "steps": 2}, max_release=8, **SPEC)
    stage = Stage.open(spec, None, CPU, Artifacts())
    defense, _ = stage.defense()
    released, ms = stage.released(defense, "test")
    x = stage.images("test")
    assert released.shape == x.shape and ms > 0
    assert (released - x).abs().max() <= 16 / 255 + 1e-6


@pytest.mark.parametrize("attackers, expected", [("transfer", {"test"}), ("transfer,adaptive", {"attacker", "val", "test"})])
def test_a_sweep_releases_only_the_splits_its_attackers_use(tmp_path, monkeypatch, attackers, expected):
    # Off-the-shelf models never see released training data: an FMD sweep with `transfer` alone
    # (the paper's setting, and the tuning runs) must not pay for releasing the attacker and val splits.
    from bench.protocol import Defense
    from bench.runner import Env, execute

    released, original = [], Defense.release

    def counted(self, x, y=None, desc=None):
        released.append((self.name, desc))
        return original(self, x, y, desc=desc)

    monkeypatch.setattr(Defense, "release", counted)
    args = build_parser().parse_args(["run", "--defense", "fmd", "--set", "fmd.steps=2", "--attacker", attackers,
                                      "--dataset", "synthetic", "--preset", "smoke", "--seeds", "0"])
    summary = execute(plan_specs(args), Env(results_dir=tmp_path, jobs=1))
    assert not summary.failed
    assert {desc.split()[-1] for name, desc in released if name == "fmd"} == expected
    assert {desc.split()[-1] for name, desc in released if name == "identity"} == expected
