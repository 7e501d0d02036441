"""Every number the harness reports is computed here (DESIGN section 4).

Plugins never grade themselves: they return logits or images, and these
functions turn them into accuracies, leakage, PSNR/SSIM and aggregates.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

# scipy.stats and skimage are imported where they are used: at module level they cost ~0.8 s in every
# process that imports the harness (each CLI call, each loky or Dask worker), most of which never use them.


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    # A (N,) or (1, K) tensor would broadcast against y into a plausible number.
    if logits.dim() != 2 or len(logits) != len(y):
        raise ValueError(f"accuracy: logits of shape {tuple(logits.shape)} for {len(y)} labels")
    # argmax of a NaN row is 0: without this check a broken model would get a plausible accuracy.
    if not torch.isfinite(logits).all():
        raise FloatingPointError(f"{int((~torch.isfinite(logits)).any(1).sum())} of {len(logits)} predictions "
                                 "have non-finite logits")
    return (logits.argmax(1) == y).float().mean().item()


def chance(y: torch.Tensor) -> float:
    """Majority-class rate: what always guessing the most common class scores.

    A single class leaves nothing to learn (chance 1, leakage undefined): an error, not a number.
    """
    counts = torch.bincount(y)
    if int((counts > 0).sum()) < 2:
        raise ValueError(f"the labels hold a single class ({len(y)} of class {int(counts.argmax())}): "
                         "accuracy against chance means nothing")
    return (counts.max() / len(y)).item()


def agreement(released_logits: torch.Tensor, clean_logits: torch.Tensor) -> float:
    """How often the designated model says the same on released data as on the clean image."""
    return (released_logits.argmax(1) == clean_logits.argmax(1)).float().mean().item()


def designated_metrics(clean_logits: torch.Tensor, released_logits: torch.Tensor, y: torch.Tensor) -> dict:
    return {
        "clean_acc": accuracy(clean_logits, y),
        "utility_acc": accuracy(released_logits, y),
        "agreement": agreement(released_logits, clean_logits),
    }


def classifier_metrics(pred, y: torch.Tensor) -> dict:
    """`attack_acc` of one model, or of an ensemble: each member, their mean and max.

    For an ensemble `attack_acc` is the max (the attacker picks its best model),
    which is what leakage and the worst case are computed on.
    """
    if isinstance(pred, dict):
        accs = {name: accuracy(logits, y) for name, logits in pred.items()}
        out = {f"attack_acc.{name}": acc for name, acc in accs.items()}
        out["attack_acc_mean"] = float(np.mean(list(accs.values())))
        out["attack_acc_max"] = max(accs.values())
        out["attack_acc"] = out["attack_acc_max"]
        return out
    return {"attack_acc": accuracy(pred, y)}


def image_metrics(pred: torch.Tensor, images: torch.Tensor) -> dict:
    """PSNR and SSIM on [0, 1] images, per image then averaged (skimage)."""
    if pred.shape != images.shape:
        raise ValueError(f"image metrics: predictions of shape {tuple(pred.shape)} for images of shape "
                         f"{tuple(images.shape)}")
    if not torch.isfinite(pred).all():
        raise FloatingPointError("image metrics: predictions hold NaN or inf")
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    p = pred.clamp(0, 1).numpy().astype(np.float64)
    t = images.numpy().astype(np.float64)
    psnrs, ssims = [], []
    for a, b in zip(p, t):
        with np.errstate(divide="ignore"):  # identical images: infinite PSNR, capped below
            psnrs.append(peak_signal_noise_ratio(b, a, data_range=1.0))
        ssims.append(structural_similarity(b, a, data_range=1.0, channel_axis=0,
                                           win_size=min(7, _odd(min(b.shape[1:])))))
    # A pixel-perfect inversion has infinite PSNR; cap it so aggregates stay finite.
    return {"psnr": float(np.mean(np.minimum(psnrs, 100.0))), "ssim": float(np.mean(ssims))}


def _odd(n: int) -> int:
    return n if n % 2 else n - 1


def leakage(attack: float, chance_level: float, attack_on_identity: float) -> float | None:
    """(attack - chance) / (attack_on_identity - chance): 0 = nothing learnt, 1 = as with no defense."""
    denom = attack_on_identity - chance_level
    if denom <= 1e-9:
        return None  # the attacker learns nothing even without a defense: leakage is undefined
    return (attack - chance_level) / denom


# A private task this close to a function of the designated one cannot be hidden by any release
# that keeps the designated task: it says nothing about a defense (DESIGN section 4).
DERIVABLE_AT = 0.99


def derivability(designated: torch.Tensor, private: torch.Tensor) -> float:
    """The fraction of images whose private value is the most common one of their designated class:
    how well the designated label alone predicts the private one (1.0: a function of it).

    Computed on the owner's training labels, which is what the owner knows when choosing a task.
    """
    if len(designated) != len(private) or len(designated) == 0:
        raise ValueError(f"derivability: {len(designated)} designated and {len(private)} private labels")
    n_private = int(private.max()) + 1
    counts = torch.zeros(int(designated.max()) + 1, n_private, dtype=torch.long)
    counts.index_put_((designated.long(), private.long()), torch.ones_like(private, dtype=torch.long),
                      accumulate=True)
    return (counts.max(1).values.sum() / len(designated)).item()


def suppression(utility: float, attack: float) -> float | None:
    return utility / attack if attack > 0 else None


def is_weak(attack_on_identity: float, clean_acc: float, ratio: float = 0.9) -> bool:
    """An attacker that cannot reach 0.9 x the designated model's accuracy without a defense."""
    return attack_on_identity < ratio * clean_acc


def ci95(values) -> tuple[float, float]:
    """Student-t 95 % confidence interval of the mean; none (nan, nan) for one value: a single seed says
    nothing about the spread, and a zero-width interval would read as certainty."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return math.nan, math.nan
    sd = float(v.std(ddof=1))
    if sd == 0.0:
        return m, m
    # scipy's t.interval(0.95, n - 1, loc=m, scale=sem) computed as it does (quantile * scale + loc), with
    # the quantiles looked up once per n: a leaderboard asks for thousands of intervals over a few sizes.
    q_lo, q_hi = _t_quantiles(len(v) - 1)
    scale = sd / len(v) ** 0.5
    return float(q_lo * scale + m), float(q_hi * scale + m)


@functools.lru_cache(maxsize=None)
def _t_quantiles(df: int) -> tuple[float, float]:
    from scipy import stats

    # The tail probabilities as interval() forms them: (1 - 0.95) / 2 is not exactly 0.025.
    return float(stats.t.ppf((1.0 - 0.95) / 2, df)), float(stats.t.ppf((1.0 + 0.95) / 2, df))


def finite(metrics: dict) -> dict:
    """Drop undefined values (None) and reject NaN/inf, which would poison every aggregate."""
    out = {}
    for k, v in metrics.items():
        if v is None:
            continue
        v = float(v)
        if not math.isfinite(v):
            raise FloatingPointError(f"metric {k} is {v}")
        out[k] = v
    return out


def relative_metrics(m: dict, identity: dict) -> dict:
    """Leakage of a defended run against its identity twin (same attacker, seed, data).

    Classifiers: every `attack_acc*` number against chance. Inversion: SSIM
    against the SSIM of predicting the mean image (what a decoder that learnt
    nothing would output).
    """
    out = {}
    for key, value in m.items():
        if key.startswith("attack_acc") and key in identity:
            out["leakage" + key[len("attack_acc"):]] = leakage(value, m["chance"], identity[key])
            out[key + "_identity"] = identity[key]
    if "ssim" in m and "ssim" in identity:
        out["leakage"] = leakage(m["ssim"], m["ssim_chance"], identity["ssim"])
        out["psnr_identity"], out["ssim_identity"] = identity["psnr"], identity["ssim"]
    return out
