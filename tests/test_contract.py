"""The plugin contract, checked for EVERY registered defense and attacker on tiny synthetic data.

Names are read from the registry at collection time, so a new plugin is covered
without touching this file.
"""
import pytest
import torch

from bench.data.synthetic import Synthetic
from bench.errors import NotApplicable
from bench.models import build_classifier
from bench.protocol import AttackContext, DataSpec, FitData
from bench.registry import ATTACKERS, DEFENSES
from bench.training import TrainConfig, as_float, fit_classifier

CPU = torch.device("cpu")
TINY = TrainConfig(epochs=1, batch_size=64, augment=False)


@pytest.fixture(scope="module")
def world():
    """Synthetic data, owner/attacker/val/test parts and a trained designated model."""
    data = Synthetic(n=400, size=16).load(None)
    x, y = as_float(data.images), data.labels["class"]
    parts = {"owner": slice(0, 120), "attacker": slice(120, 240), "val": slice(240, 300), "test": slice(320, 400)}
    torch.manual_seed(0)
    target = fit_classifier(build_classifier("cnn", data.image_shape, 4), x[parts["owner"]], y[parts["owner"]],
                            val=(x[parts["val"]], y[parts["val"]]), config=TINY, device=CPU, seed=0)
    return data, x, y, parts, target


def _fit_defense(name, world):
    data, x, y, p, target = world
    spec = DataSpec(data.image_shape, 4, "class")
    fit = FitData(x[p["owner"]], y[p["owner"]], x[p["val"]], y[p["val"]], spec, CPU, TINY)
    return DEFENSES.create(name).fit(fit, target, seed=0), spec


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_contract(name, world):
    data, x, y, p, target = world
    before = {k: v.clone() for k, v in target.state_dict().items()}
    fresh = DEFENSES.create(name)
    assert fresh.get_params() == DEFENSES.hparams(name)         # __init__ stores hyperparameters only
    assert not [k for k in vars(fresh) if k.endswith("_")]       # no learned state before fit
    assert fresh.releases in ("image", "features")

    defense, spec = _fit_defense(name, world)
    for k, v in target.state_dict().items():                     # the designated model is never changed
        assert torch.equal(v, before[k]), f"{name} changed the target's {k}"
    assert all(not q.requires_grad for q in target.parameters())

    # Released as the pipeline does, with the designated-task labels (used only by defenses that need them).
    xt, yt = x[p["test"]], y[p["test"]]
    released = defense.release(xt, yt)
    assert len(released) == len(xt) and torch.isfinite(released).all()
    if defense.releases == "image":
        assert released.shape == xt.shape
    assert torch.allclose(defense.release(xt, yt), released)                               # deterministic
    halves = torch.cat([defense.release(xt[:37], yt[:37]), defense.release(xt[37:], yt[37:])])
    assert torch.allclose(halves, released, atol=1e-5)                                      # batch-independent
    logits = defense.designated(released)
    assert logits.shape == (len(xt), 4)

    restored = DEFENSES.create(name).restore(defense.state_dict(), target, spec, CPU)
    assert torch.allclose(restored.release(xt, yt), released, atol=1e-6)


def _context(world, released_val, val_targets, shape, clean_models):
    data, x, y, p, target = world

    def clean_model(arch):
        if arch not in clean_models:
            torch.manual_seed(0)
            clean_models[arch] = fit_classifier(build_classifier(arch, data.image_shape, 4), x[p["attacker"]],
                                                y[p["attacker"]], val=(x[p["val"]], y[p["val"]]), config=TINY,
                                                device=CPU, seed=0)
        return clean_models[arch]

    return AttackContext(task="class", num_classes=4, image_shape=data.image_shape, released_shape=tuple(shape),
                         released_val=released_val, val_targets=val_targets, target_arch="cnn", device=CPU,
                         train=TINY, clean_model=clean_model)


@pytest.fixture(scope="module")
def clean_models():
    return {}


@pytest.mark.parametrize("name", ATTACKERS.names())
def test_attacker_contract_on_images(name, world, clean_models):
    data, x, y, p, _ = world
    attacker = ATTACKERS.create(name)
    assert attacker.get_params() == ATTACKERS.hparams(name)
    assert not [k for k in vars(attacker) if k.endswith("_")]
    assert attacker.knowledge in ("black-box", "gray-box", "white-box")
    wants_images = attacker.predicts == "images"
    targets = x[p["attacker"]] if wants_images else y[p["attacker"]]
    val_targets = x[p["val"]] if wants_images else y[p["val"]]
    ctx = _context(world, x[p["val"]], val_targets, data.image_shape, clean_models)
    assert attacker.fit(x[p["attacker"]], targets, context=ctx, seed=0) is attacker
    out = attacker.predict(x[p["test"]])
    n = len(x[p["test"]])
    if wants_images:
        assert out.shape == x[p["test"]].shape and out.min() >= 0 and out.max() <= 1
    else:
        outs = out.values() if isinstance(out, dict) else [out]
        assert all(o.shape == (n, 4) and torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("shape", [(8, 2, 2), (16,)], ids=["feature-map", "vector"])
@pytest.mark.parametrize("name", ATTACKERS.names())
def test_attacker_adapts_to_features_or_says_not_applicable(name, shape, world, clean_models):
    data, x, y, p, _ = world
    g = torch.Generator().manual_seed(0)
    feats = {k: torch.randn(len(x[p[k]]), *shape, generator=g) + y[p[k]].view(-1, *[1] * len(shape)).float()
             for k in ("attacker", "val", "test")}
    attacker = ATTACKERS.create(name)
    wants_images = attacker.predicts == "images"
    targets = x[p["attacker"]] if wants_images else y[p["attacker"]]
    val_targets = x[p["val"]] if wants_images else y[p["val"]]
    ctx = _context(world, feats["val"], val_targets, shape, clean_models)
    try:
        attacker.fit(feats["attacker"], targets, context=ctx, seed=0)
    except NotApplicable as e:
        assert str(e)  # the reason is recorded with the run
        return
    out = attacker.predict(feats["test"])
    expected = x[p["test"]].shape if wants_images else (len(feats["test"]), 4)
    assert (out.shape if not isinstance(out, dict) else next(iter(out.values())).shape) == expected
