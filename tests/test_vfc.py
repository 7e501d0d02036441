"""VFC's own mechanics: the mask's scoring, its schedule, and what is released."""
import pytest
import torch

from bench import precision
from bench.data.synthetic import Synthetic
from bench.models import build_classifier
from bench.protocol import DataSpec, FitData
from bench.training import TrainConfig, as_float, fit_classifier
from defenses.vfc import VFC, binary_mask, dimension_scores

CPU = torch.device("cpu")
TINY = TrainConfig(epochs=2, batch_size=32, augment=False)


@pytest.fixture(scope="module")
def world():
    data = Synthetic(n=300, size=16).load(None)
    x, y = as_float(data.images), data.labels["class"]
    torch.manual_seed(0)
    target = fit_classifier(build_classifier("cnn", data.image_shape, 4), x[:150], y[:150], val=(x[150:200], y[150:200]),
                            config=TINY, device=CPU, seed=0)
    fit = FitData(x[:150], y[:150], x[150:200], y[150:200], DataSpec(data.image_shape, 4, "class"), CPU, TINY)
    return fit, target, x[200:]


def _fitted(world, **params):
    fit, target, _ = world
    return VFC(latent_dim=16, mask_every=2, **params).fit(fit, target, seed=0)


@pytest.fixture(scope="module")
def masked(world):
    return _fitted(world, keep=0.25)


def test_released_checkpoint_keeps_the_top_fraction(masked):
    mask = masked.net_.mask
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert int(mask.sum()) == round(0.25 * 16)


def test_no_mask_ablation_keeps_every_dimension(world):
    assert bool((_fitted(world, score="none").net_.mask == 1).all())


def test_masked_dimensions_do_not_reach_the_release(masked, world):
    net, x = masked.net_.eval(), world[2][:20]
    with torch.no_grad(), precision.autocast(masked.device_):   # the precision the release runs at
        mu, _ = net.encode(x)
        noise = torch.randn_like(mu) * (1 - net.mask)          # change only the dropped dimensions
        decoded = net.decode((mu + noise) * net.mask).float()
    assert torch.allclose(decoded, masked.release(x), atol=1e-6)


def test_classifier_encoder_releases_input_shaped_data(world):
    fit, target, x = world
    fitted = VFC(latent_dim=8, mask_every=2, encoder="cnn").fit(fit, target, seed=0)
    assert fitted.release(x[:5]).shape == x[:5].shape


def test_unknown_encoder_names_the_choices(world):
    with pytest.raises(ValueError, match="vfc.encoder='vit'.*conv, cnn, resnet, mobilenet"):
        _fitted(world, encoder="vit")


def test_training_that_ends_in_warm_up_is_an_error(world):
    with pytest.raises(ValueError, match="warm-up"):
        _fitted(world, warmup=1.0)


KL = torch.tensor([1.0, 0.9, 0.5, 0.1, 0.05, 0.01])
SALIENCY = torch.tensor([0.05, 0.6, 0.9, 1.0, 0.01, 0.02])


@pytest.mark.parametrize("score,kept", [("kl", {0, 1}), ("saliency", {2, 3}), ("kl*saliency", {1, 2})])
def test_mask_keeps_the_highest_scores(score, kept):
    """KL is high on dimensions 0-2, saliency on 1-3: the product favours 1 and 2, high on both."""
    mask = binary_mask(dimension_scores(KL, SALIENCY, score), keep=2 / 6, tau=0.0)
    assert set(mask.nonzero().flatten().tolist()) == kept


def test_threshold_mask_keeps_dimensions_near_the_best():
    mask = binary_mask(dimension_scores(KL, SALIENCY, "kl"), keep=0.1, tau=0.45)
    assert mask.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
