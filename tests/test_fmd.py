"""FMD (feature-map distortion) and what it needs from the harness: labels at release,
and the release cap for costly defenses that the identity twin shares."""
import pytest
import torch
import torch.nn.functional as F

from bench.artifacts import Artifacts
from bench.cli import build_parser
from bench.planning import plan_specs
from bench.data.synthetic import Synthetic
from bench.models import build_classifier
from bench.pipeline import Stage
from bench.presets import get_preset
from bench.protocol import DataSpec, FitData
from bench.runspec import RunSpec
from bench.training import TrainConfig, as_float, fit_classifier
from defenses.fmd import FMD, capture_output, default_feature_layer, fold_batchnorm

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


def reference_release(defense, x, y):
    """FMD's release loop before its steps were fused (two copies of the feature map a step, BatchNorm unfolded):
    the reference the faster `_release` must reproduce. One copy of it, the benchmark's baseline."""
    from bench.benchmarks.fmd_release import BaselineFMD

    with torch.no_grad():
        return BaselineFMD._release(defense, x, y)


@pytest.mark.usefixtures("fp32")
@pytest.mark.parametrize("label_source", ["pred", "gt"])
def test_release_matches_the_old_loop(world, label_source):
    # Tolerance: the steps run through the designated model with BatchNorm folded into its convolutions,
    # the same function up to float rounding (~1e-7 relative, see the next test). A sign step amplifies
    # rounding only where the gradient of a pixel turns on a near-tie (two equal activations in a max-pool
    # window, a pre-activation at 0): there the old loop's pick was itself a rounding accident, and the
    # pixel's later path may part by up to 2 eps. Measured here: 1 step, every pixel identical; 8 steps,
    # 100 % (pred) and 98.6 % (gt, the mean distortion equal to 0.03 %). With 100 steps: 98.5 % on 28 px
    # synthetic images, 97.3 % on Fashion-MNIST with the same mean feature distortion (0.0578) and
    # agreement (1.000). So: nearly all pixels identical after one step, most after eight, and the same
    # distortion reached to a few percent.
    _, _, x, y = world
    one = fitted(world, label_source=label_source, steps=1)
    assert (one.release(x, y) == reference_release(one, x, y)).float().mean() >= 0.999
    defense = fitted(world, label_source=label_source)
    released, reference = defense.release(x, y), reference_release(defense, x, y)
    assert (released == reference).float().mean() >= 0.95
    reached, expected = distortion(defense, x, released), distortion(defense, x, reference)
    assert torch.allclose(reached.mean(), expected.mean(), rtol=0.05)


def test_folded_model_is_the_same_function_on_a_copy(world):
    target, _, x, _ = world
    before = {k: v.clone() for k, v in target.state_dict().items()}
    folded = fold_batchnorm(target, keep="4")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters()) and not folded.training
    with torch.no_grad():
        assert torch.allclose(folded(x), target(x), rtol=1e-4, atol=1e-5)
    # A pair holding the hooked layer keeps its own output: it is not folded.
    kept = fold_batchnorm(target, keep="2.0")
    assert isinstance(dict(kept.named_modules())["2.1"], torch.nn.BatchNorm2d)
    assert not isinstance(dict(kept.named_modules())["0.1"], torch.nn.BatchNorm2d)


@pytest.mark.parametrize("arch", ["resnet", "mobilenet"])
def test_folding_leaves_other_architectures_the_same_function(arch):
    # timm's BatchNormAct2d (a BatchNorm2d subclass with its activation inside) must never be folded away.
    torch.manual_seed(0)
    model = build_classifier(arch, (1, 16, 16), 4).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(model)(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("fp32")
def test_channels_last_steps_release_the_same_images(world, monkeypatch):
    # The steps run channels_last (on CPU too: measured faster); NCHW gives the same images up to rounding.
    import defenses.fmd

    _, _, x, y = world
    released = fitted(world).release(x, y)
    monkeypatch.setattr(defenses.fmd, "CHANNELS_LAST_DEVICES", ())
    plain = fitted(world).release(x, y)
    assert released.is_contiguous()
    assert (released - x).abs().max() <= 16 / 255 + 1e-6
    assert (released == plain).float().mean() >= 0.95  # rounding only, as in test_release_matches_the_old_loop


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
