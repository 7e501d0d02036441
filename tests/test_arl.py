"""ARL (defenses/arl.py): released feature shapes, the frozen target, restore, and that the
adversarial term really works against the simulated decoder. Tiny synthetic data, CPU."""
import pytest
import torch
import torch.nn.functional as F

from bench.data.synthetic import Synthetic
from bench.models import build_classifier
from bench.protocol import DataSpec, FitData
from bench.training import TrainConfig, as_float, fit_classifier, predict
from defenses.arl import ARL, feature_shape

CPU = torch.device("cpu")
# Small batches give enough steps on 200 private images; patience = epochs so every epoch runs.
CONFIG = TrainConfig(epochs=3, batch_size=32, augment=False, patience=3)
STRONG_LAM = 100.0   # pixel MSE is ~0.03 here: lam must be large for the term to weigh against CE
WIDTH = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small train faster on one thread, and far faster when other jobs share the
    cores (two OpenMP threads then spin-wait: ~20x slower measured on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread_per_test(one_thread):
    torch.set_num_threads(1)   # conftest sets 2 before each test


@pytest.fixture(scope="module")
def world(one_thread):
    data = Synthetic(n=800, size=16).load(None)
    x, y = as_float(data.images), data.labels["class"]
    parts = {"owner": slice(0, 400), "val": slice(400, 600), "test": slice(600, 800)}
    torch.manual_seed(0)
    target = fit_classifier(build_classifier("cnn", data.image_shape, 4), x[parts["owner"]], y[parts["owner"]],
                            val=(x[parts["val"]], y[parts["val"]]), config=CONFIG.with_(epochs=1), device=CPU,
                            seed=0)
    spec = DataSpec(data.image_shape, 4, "class")
    fit = FitData(x[parts["owner"]], y[parts["owner"]], x[parts["val"]], y[parts["val"]], spec, CPU, CONFIG)
    return fit, target, x[parts["test"]], y[parts["test"]]


@pytest.fixture(scope="module")
def fitted(world):
    """The same seed and data with and without the adversarial term."""
    fit, target, _, _ = world
    before = {k: v.clone() for k, v in target.state_dict().items()}
    out = {lam: ARL(lam=lam, width=WIDTH).fit(fit, target, seed=0) for lam in (0.0, STRONG_LAM)}
    return out, before


def test_releases_a_feature_map_and_head_logits(world, fitted):
    fit, _, xt, yt = world
    arl = fitted[0][0.0]
    released = arl.release(xt)
    assert arl.releases == "features"
    assert released.shape == (len(xt), 2 * WIDTH, 4, 4)        # depth 2: two stride-2 stages on 16 px
    logits = arl.designated(released)
    assert logits.shape == (len(xt), 4)
    assert (logits.argmax(1) == yt).float().mean() > 0.9        # the head C is the designated model


@pytest.mark.parametrize("depth, expected", [(1, (WIDTH, 8, 8)), (3, (4 * WIDTH, 2, 2))])
def test_depth_sets_which_layer_is_released(world, depth, expected):
    fit, target, xt, _ = world
    assert feature_shape(fit.spec.image_shape, depth, WIDTH) == expected
    cheap = FitData(fit.x[:64], fit.y[:64], fit.x_val[:32], fit.y_val[:32], fit.spec, CPU, CONFIG.with_(epochs=1))
    arl = ARL(depth=depth, width=WIDTH, pretrain_epochs=0).fit(cheap, target, seed=0)
    released = arl.release(xt[:10])
    assert released.shape == (10, *expected)
    assert arl.designated(released).shape == (10, 4)


def test_target_unchanged_and_restore_reproduces(world, fitted):
    fit, target, xt, _ = world
    arls, before = fitted
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), f"arl changed the target's {k}"
    assert not any(p.requires_grad for p in target.parameters())
    for arl in arls.values():
        restored = ARL(**arl.get_params()).restore(arl.state_dict(), target, fit.spec, CPU)
        assert torch.equal(restored.release(xt), arl.release(xt))
        assert torch.equal(restored.designated(arl.release(xt)), arl.designated(arl.release(xt)))


def test_adversarial_term_defeats_the_simulated_decoder(world, fitted):
    _, _, xt, yt = world
    arls, _ = fitted
    mse = {}
    for lam, arl in arls.items():
        reconstruction = predict(arl.net_.decoder.eval(), arl.release(xt), device=CPU)
        mse[lam] = F.mse_loss(reconstruction, xt).item()
    # Measured margin at these sizes: 1.26x-1.33x over seeds 0-2.
    assert mse[STRONG_LAM] > 1.1 * mse[0.0], mse
    # The term reaches the encoder (same seed, same pretraining, different E) ...
    e0, e1 = (dict(a.net_.encoder.named_parameters()) for a in arls.values())
    assert any(not torch.allclose(e0[k], e1[k]) for k in e0)
    # ... while the utility head still learns the task.
    strong = arls[STRONG_LAM]
    assert (strong.designated(strong.release(xt)).argmax(1) == yt).float().mean() > 0.5   # chance: 0.25


def test_perceptual_distance_runs_through_the_frozen_target(world):
    fit, target, xt, _ = world
    cheap = FitData(fit.x[:128], fit.y[:128], fit.x_val[:32], fit.y_val[:32], fit.spec, CPU, CONFIG.with_(epochs=1))
    arl = ARL(lam=1.0, rec="perceptual", width=WIDTH, pretrain_epochs=0).fit(cheap, target, seed=0)
    assert torch.isfinite(arl.release(xt)).all()
    # The perceptual hook is removed after use: the target's forward is untouched.
    last_linear = [m for m in target.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert not last_linear._forward_pre_hooks


def test_bad_rec_names_the_valid_choices(world):
    fit, target, _, _ = world
    with pytest.raises(ValueError, match="pixel, perceptual"):
        ARL(rec="ssim").fit(fit, target, seed=0)


@pytest.mark.parametrize("private", ["half", "all"])
def test_the_decoder_learns_only_on_the_public_half(world, monkeypatch, private):
    import defenses.arl as arl_module

    fit, target, _, _ = world
    cheap = FitData(fit.x[:64], fit.y[:64], fit.x_val[:32], fit.y_val[:32], fit.spec, CPU, CONFIG.with_(epochs=2))
    utility_rows, decoder_rows = [], []
    real_train, real_step = arl_module.train, ARL._decoder_step

    def spy_train(net, loss_fn, x, y, **kwargs):
        utility_rows.append(x)
        return real_train(net, loss_fn, x, y, **kwargs)

    def spy_step(self, model, xp, opt):
        decoder_rows.append(xp)
        return real_step(self, model, xp, opt)

    monkeypatch.setattr(arl_module, "train", spy_train)
    monkeypatch.setattr(ARL, "_decoder_step", spy_step)
    ARL(private=private, width=WIDTH, pretrain_epochs=0).fit(cheap, target, seed=0)

    def rows(tensors):
        return {tuple(r.flatten().tolist()) for t in tensors for r in t}

    seen_by_e, seen_by_d = rows(utility_rows), rows(decoder_rows)
    assert len(seen_by_d) == 32                        # the public half, every pass over it
    assert len(seen_by_e) == (32 if private == "half" else 64)
    assert seen_by_e.isdisjoint(seen_by_d) == (private == "half")


def test_bad_private_names_the_valid_choices(world):
    fit, target, _, _ = world
    with pytest.raises(ValueError, match="half, all"):
        ARL(private="some").fit(fit, target, seed=0)
