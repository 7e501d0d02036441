"""The one training loop every plugin uses.

Data stays in tensors on the device; each epoch slices batches from a seeded
permutation and augments them on the device, so there is no per-sample Python
in the hot path. Early stopping watches a score on `val` (never `test`) and
restores the best weights. The loop, and every prediction, runs at the process's
precision (bench.precision): bf16 autocast with channels_last where the hardware does
bf16 natively, fp32 elsewhere.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench import cores, progress
from bench.precision import autocast, memory_format, prepare_model
from bench.errors import BenchError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    patience: int = 2          # epochs without a better val score before stopping
    augment: bool = True       # random shift and horizontal flip, image-shaped inputs only
    flip: bool = True          # off for data where left/right matters

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    if isinstance(spec, torch.device):
        return spec
    if spec not in DEVICES:
        raise BenchError(f"unknown device {spec!r}; valid choices: {', '.join(DEVICES)}")
    if spec == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float tensors pass through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def augment_batch(x: torch.Tensor, gen: torch.Generator, *, shift: int = 2, flip: bool = True) -> torch.Tensor:
    """Random translation by up to `shift` px (edge-replicated) and horizontal flip, vectorised."""
    n, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    di = torch.randint(0, 2 * shift + 1, (n, 1), generator=gen, device=x.device)
    dj = torch.randint(0, 2 * shift + 1, (n, 1), generator=gen, device=x.device)
    rows = (di + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dj + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(n, generator=gen, device=x.device) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out


@torch.no_grad()
def predict(fn: Callable, x: torch.Tensor | tuple[torch.Tensor, ...], *, device: torch.device,
            batch_size: int = 512, desc: str | None = None):
    """Apply `fn` to `x` in batches on `device`; results come back on the CPU in fp32.

    `x` may be a tuple of equally long tensors (e.g. images and their labels):
    `fn` then receives one batch of each, in order.
    `fn` may return a tensor or a dict of tensors (an ensemble); the result has the same form.
    """
    inputs = x if isinstance(x, tuple) else (x,)
    if len({len(t) for t in inputs}) > 1:
        raise ValueError(f"predict: inputs of different lengths {[len(t) for t in inputs]}")
    outs = []
    n_batches = math.ceil(len(inputs[0]) / batch_size)
    # A `desc` names a loop worth showing (a release): a bar on a terminal, stage lines in a log.
    with progress.stage(desc) if desc is not None else contextlib.nullcontext():
        for done, start in enumerate(tqdm(range(0, len(inputs[0]), batch_size), desc=desc, leave=False,
                                          disable=True if desc is None else None), 1):
            batch = [t[start:start + batch_size].to(device, non_blocking=True) for t in inputs]
            with autocast(device):
                out = fn(*batch)
            outs.append({k: v.float().cpu() for k, v in out.items()} if isinstance(out, dict)
                        else out.float().cpu())
            if desc is not None:
                progress.step(f"batch {done}/{n_batches}")
            else:
                progress.tick()
            cores.rebalance()  # a long release (FMD's) takes the cores its finished siblings left
    if not outs:
        raise ValueError("predict called on an empty tensor")
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return torch.cat(outs)


def accuracy_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    logits = predict(model, x, device=device)
    model.train(was_training)
    return (logits.argmax(1) == y.cpu()).float().mean().item()


def train(model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
          x: torch.Tensor, y: torch.Tensor, *, config: TrainConfig, device: torch.device, seed: int,
          val_score: Callable[[nn.Module], float] | None = None, params=None, desc: str = "train") -> nn.Module:
    """Minimise `loss_fn(model, xb, yb)` over (x, y); keep the weights with the best `val_score`.

    A `val_score` of -inf marks an epoch whose weights may not be selected (and
    that does not count towards early stopping's patience).

    `params` restricts what is optimised (default: all trainable parameters of
    `model`); anything else stays exactly as it was.
    """
    if len(x) == 0:
        raise ValueError(f"{desc}: no training data")
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    model = prepare_model(model, device)
    batch_format = memory_format(device)
    x, y = x.to(device), y.to(device)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
                                                pct_start=0.15)
    augment = config.augment and x.dim() == 4 and min(x.shape[-2:]) >= 8
    best_score, best_state, stale = -math.inf, None, 0
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=desc, leave=False, disable=None)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen, device=device)
        for start in range(0, len(x), config.batch_size):
            idx = order[start:start + config.batch_size]
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_batch(xb, gen, flip=config.flip)
            if xb.dim() == 4:
                xb = xb.contiguous(memory_format=batch_format)
            with autocast(device):
                loss = loss_fn(model, xb, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            progress.tick()
            cores.rebalance()  # this job's share of the cores as other commands start and end (every 2 s)
        if val_score is None:
            progress.step(f"{desc} epoch {epoch + 1}/{config.epochs}")
            continue
        model.eval()
        score = val_score(model)
        bar.set_postfix(epoch=epoch, val=f"{score:.4f}")
        progress.step(f"{desc} epoch {epoch + 1}/{config.epochs}, val {score:.4f}")
        if score == -math.inf:
            continue  # not yet eligible for selection (e.g. a defense still in its warm-up phase)
        if score > best_score:
            best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


def fit_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, val: tuple[torch.Tensor, torch.Tensor],
                   config: TrainConfig, device: torch.device, seed: int, desc: str = "classifier") -> nn.Module:
    """Cross-entropy training with early stopping on val accuracy."""
    xv, yv = val
    return train(model, lambda m, xb, yb: F.cross_entropy(m(xb), yb), x, y, config=config, device=device,
                 seed=seed, val_score=lambda m: accuracy_score(m, xv, yv, device), desc=desc)


def fit_decoder(model: nn.Module, released: torch.Tensor, images: torch.Tensor, *,
                val: tuple[torch.Tensor, torch.Tensor], config: TrainConfig, device: torch.device,
                seed: int, desc: str = "decoder") -> nn.Module:
    """MSE regression from released data to images, early-stopped on val MSE."""
    rv, iv = val

    def val_score(m):
        return -F.mse_loss(predict(m, rv, device=device), iv.float()).item()

    # No augmentation: the pairs (released, image) must stay aligned.
    return train(model, lambda m, rb, ib: F.mse_loss(m(rb), ib), released, images,
                 config=config.with_(augment=False), device=device, seed=seed, val_score=val_score, desc=desc)
