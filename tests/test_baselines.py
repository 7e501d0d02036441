"""The four baseline defenses: plain image transforms with one strength each.
Their plugin contract is checked with every other defense in tests/test_contract.py."""
import pytest
import torch

from bench import metrics as M
from bench.data.synthetic import Synthetic
from bench.protocol import DataSpec, FitData
from bench.registry import DEFENSES
from bench.training import TrainConfig, as_float

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def images():
    return as_float(Synthetic(n=200, size=16, channels=3).load(None).images[:64])


def _release(name, images, seed=0, **params):
    defense = DEFENSES.create(name, params)
    spec = DataSpec(tuple(images.shape[1:]), 4, "class")
    fit = FitData(images, torch.zeros(len(images), dtype=torch.long), images, torch.zeros(len(images), dtype=torch.long),
                  spec, CPU, TrainConfig(epochs=1))
    return defense.fit(fit, torch.nn.Flatten(), seed=seed).release(images)


STRENGTHS = {"noise": ("sigma", 0.05, 0.3), "blur": ("sigma", 0.5, 2.0), "jpeg": ("quality", 90, 5),
             "pixelate": ("block", 2, 8)}


@pytest.mark.parametrize("name", STRENGTHS)
def test_a_stronger_setting_moves_the_release_further_from_the_input(name, images):
    param, weak, strong = STRENGTHS[name]
    psnr_weak = M.image_metrics(_release(name, images, **{param: weak}), images)["psnr"]
    psnr_strong = M.image_metrics(_release(name, images, **{param: strong}), images)["psnr"]
    assert psnr_strong < psnr_weak - 1, (psnr_weak, psnr_strong)


@pytest.mark.parametrize("name,params", [("noise", {"sigma": 0.0}), ("pixelate", {"block": 1})])
def test_strength_zero_releases_the_input(name, params, images):
    assert torch.equal(_release(name, images, **params), images)


def test_noise_is_seeded_and_tied_to_each_image(images):
    a, b = _release("noise", images, seed=0), _release("noise", images, seed=1)
    assert not torch.equal(a, b)
    # The same image released among others, or alone, gets the same noise.
    assert torch.equal(_release("noise", images[5:6], seed=0), a[5:6])


def test_pixelate_makes_blocks_of_their_mean(images):
    out = _release("pixelate", images, block=4)
    blocks = out.unfold(2, 4, 4).unfold(3, 4, 4)
    assert torch.allclose(blocks.amax((-1, -2)), blocks.amin((-1, -2)))
    assert torch.allclose(blocks[..., 0, 0], images.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)), atol=1e-6)


BAD = {"noise": "sigma=-0.1", "blur": "sigma=0", "jpeg": "quality=100", "pixelate": "block=0"}


@pytest.mark.parametrize("name", BAD)
def test_a_strength_out_of_range_is_one_line_before_any_work(name, main_inprocess, tmp_path):
    out = main_inprocess("run", "--dataset", "synthetic", "--preset", "smoke", "--defense", name,
                         "--set", f"{name}.{BAD[name]}", "--results-dir", tmp_path / "r")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and f"--set {name}.{BAD[name].split('=')[0]}=" in lines[0]
    assert not (tmp_path / "r").exists()
