"""The harness's shared training loop vs a plain DataLoader loop and vs two variants of itself
(channels_last, bf16 autocast, torch.compile), its share of the fp32 and bf16 matmul peaks, and where
early stopping stops.

    python -m bench.benchmarks.training_loop --n-images 10000 --steps 200 --threads 2

All loops train `build_classifier("cnn", ...)` with AdamW + OneCycle, the same batch
size, the same number of steps and the same augmentation (shift by up to 2 px with
edge padding, horizontal flip, when the default preset augments the dataset; it does not on
Fashion-MNIST), with the default preset's batch size and learning rate:
  - shared (today): `bench.training.train`, tensors on the device, batches sliced from a
    seeded permutation, augmentation vectorised on the batch;
  - plain: the way a typical research script does it, a `torch.utils.data.DataLoader`
    over uint8 images turned into PIL images one at a time, with torchvision's
    RandomCrop(padding) + RandomHorizontalFlip + ToTensor per sample;
  - channels_last: the shared loop in fp32 with the model's weights and every batch in
    channels_last (NHWC) memory format;
  - bf16: the shared loop at bf16 precision (bf16 autocast, model and batches channels_last),
    what the harness runs by default on CUDA and on CPUs with native bf16 (bench.precision);
  - compile: the shared loop on `torch.compile(model)` (inductor). Its compile time is
    reported apart: once with an empty inductor cache (a fresh machine: the first
    training ever) and once after `torch._dynamo.reset()` with the disk cache warm (about
    what a new worker process pays; a real new process also pays inductor's start-up).
    The timed run uses a fresh compiled model, as every training in the harness builds
    its own, so it pays whatever re-tracing a new model needs.
"today" is the loop at fp32 in NCHW, the harness's CPU path before bf16. The peaks are the best
of a few large fp32 and bf16 `torch.matmul`s; the model's training FLOPs
per image are its forward FLOPs (counted by torch's FlopCounterMode) x 3, the usual
estimate for forward + backward.

Early stopping: the CNN is trained with the `default` preset's TrainConfig (with the
dataset's own overrides) on a subset of that preset's owner split, scored on its val
split every epoch through `train`'s `val_score`, which records the curve, the best
epoch (the weights `train` keeps), the epoch it stopped at, and the time of every
epoch and every validation pass.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench import precision
from bench.models import build_classifier
from bench.presets import get_preset
from bench.registry import DATASETS
from bench.training import TrainConfig, accuracy_score, as_float, resolve_device, train


class PILImages(Dataset):
    """uint8 images handed out one PIL image at a time, like torchvision's own MNIST-style datasets."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        return self.transform(pil), int(self.labels[i])


def per_sample_transform(size: int, flip: bool = True, augment: bool = True) -> transforms.Compose:
    steps = [transforms.RandomCrop(size, padding=2, padding_mode="edge")] if augment else []
    if flip and augment:
        steps.append(transforms.RandomHorizontalFlip())
    return transforms.Compose([*steps, transforms.ToTensor()])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(model, images: np.ndarray, labels: np.ndarray, *, config: TrainConfig, device: torch.device,
               seed: int, loader_workers: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = model.to(device).train()
    data = PILImages(images, labels, per_sample_transform(images.shape[-1], config.flip, config.augment))
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, num_workers=loader_workers,
                        pin_memory=device.type == "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * len(loader),
                                                pct_start=0.15)
    for _ in range(config.epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


# --- the variants of the shared loop: (model -> model to train, loss function) ---------------
def cross_entropy(model, xb, yb):
    return F.cross_entropy(model(xb), yb)


def channels_last_cross_entropy(model, xb, yb):
    return F.cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), yb)


def as_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last)


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    return torch.compile(model, backend="inductor")


VARIANTS = {  # name: (precision, what is done to a fresh model, the loss function train() is given)
    "today": ("fp32", lambda m: m, cross_entropy),
    "channels_last": ("fp32", as_channels_last, channels_last_cross_entropy),
    # The harness's loop at bf16: train() itself puts the model and each batch in channels_last.
    "bf16": ("bf16", lambda m: m, cross_entropy),
    "compile": ("fp32", compiled, cross_entropy),
}


def train_variant(variant: str, model, x, y, *, config: TrainConfig, device: torch.device, seed: int, **kw):
    """`train` with one of VARIANTS: its precision, its model preparation and its loss."""
    bits, prepare, loss_fn = VARIANTS[variant]
    with precision.requesting(bits):
        return train(prepare(model), loss_fn, x, y, config=config, device=device, seed=seed, **kw)


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5,
                       dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of an n x n matmul (2 n^3 FLOPs) in `dtype` over `repeats` tries, after one warm-up."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def training_flops_per_image(model: torch.nn.Module, image_shape, device: torch.device, batch: int = 8) -> float:
    """Forward FLOPs per image x 3 (backward costs about twice the forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, *image_shape, device=device)
    model = model.to(device).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return 3 * counter.get_total_flops() / batch


def val_curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
              *, config: TrainConfig, device: torch.device, seed: int) -> dict:
    """Train as `fit_classifier` does, recording every epoch's val accuracy and the time of epochs and val passes.

    `train` keeps the first epoch of the highest score (it replaces the best only on a strictly
    higher one) and stops once `config.patience` epochs in a row did not beat it.
    """
    scores, val_s, marks = [], [], [time.perf_counter()]

    def val_score(m) -> float:
        start = time.perf_counter()
        score = accuracy_score(m, x_val, y_val, device)
        synchronize(device)
        val_s.append(time.perf_counter() - start)
        scores.append(score)
        marks.append(time.perf_counter())
        return score

    train(model, cross_entropy, x, y, config=config, device=device, seed=seed, val_score=val_score,
          desc="early-stopping curve")   # at the process's precision, as the harness trains
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return {"scores": scores, "best_epoch": best + 1, "epochs_run": len(scores),
            "epoch_s": [marks[i + 1] - marks[i] - val_s[i] for i in range(len(scores))], "val_s": val_s}


def one_line(e: BaseException) -> str:
    return (f"{type(e).__name__}: {e}".strip().splitlines() or [type(e).__name__])[0][:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or synthetic for tests")
    parser.add_argument("--data-dir", type=Path, help="where the dataset lives (default: the loader's own search)")
    parser.add_argument("--n-images", type=int, default=10000, help="training subset size (default 10000)")
    parser.add_argument("--steps", type=int, default=200,
                        help="optimiser steps, rounded to whole epochs over the subset (default 200)")
    parser.add_argument("--batch-size", type=int, help="default: the default preset's (with the dataset's overrides)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction,
                        help="shift and flip each batch (default: as the default preset trains the dataset)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="DataLoader worker processes of the plain loop (default 0: they would share the "
                             "same cores as the training threads)")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n peak matmul (default 2048)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of each shared-loop variant; the fastest counts (default 1)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--curve-images", type=int, default=10000,
                        help="owner images of the early-stopping curve (default 10000; 0 skips the curve)")
    parser.add_argument("--curve-archs", default="cnn",
                        help="comma-separated architectures whose early-stopping curve is measured (default cnn, "
                             "the designated model; resnet and mobilenet are the transfer attacker's clean models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    data = DATASETS.create(args.dataset, {}).load(args.data_dir)
    images, labels = data.images[data.train_idx][:args.n_images], data.labels[data.default_task][data.train_idx][:args.n_images]
    n = len(images)
    # The default preset's training (batch, lr, augmentation) on this dataset: what the harness runs.
    preset = get_preset("default")
    config = preset.train.with_(**DATASETS.get(args.dataset).train_overrides.get(preset.name, {}))
    config = config.with_(batch_size=args.batch_size, augment=args.augment)
    args.batch_size = config.batch_size
    steps_per_epoch = math.ceil(n / config.batch_size)
    epochs = max(1, round(args.steps / steps_per_epoch))
    steps = epochs * steps_per_epoch
    config = config.with_(epochs=epochs)
    n_classes = data.num_classes(data.default_task)

    def model():
        torch.manual_seed(0)
        return build_classifier("cnn", data.image_shape, n_classes)

    def shared_loop(x, y, cfg, variant: str = "today"):
        return train_variant(variant, model(), x, y, config=cfg, device=device, seed=0)

    def timed(fn) -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    print(f"machine: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, device {device}, "
          f"torch {torch.__version__}")
    print(f"data: {n} {args.dataset} images {tuple(data.image_shape)}, {steps} steps of batch {args.batch_size} "
          f"({epochs} epochs, lr {config.lr:g}, augment {config.augment}: the default preset's), model cnn")
    x, y = as_float(images), labels
    # Warm-up of each variant on two batches and the last, partial one: allocator, kernels, and for
    # torch.compile every shape the timed run meets (a new batch size would be compiled again).
    warm = 2 * args.batch_size + n % args.batch_size if n > 2 * args.batch_size else n
    x_warm, y_warm, one_epoch = x[:warm], y[:warm], config.with_(epochs=1)
    eager_warm_s = timed(lambda: shared_loop(x_warm, y_warm, one_epoch))
    shared_loop(x_warm, y_warm, one_epoch, "channels_last")
    shared_loop(x_warm, y_warm, one_epoch, "bf16")
    seconds = {"today": math.inf, "channels_last": math.inf, "bf16": math.inf}
    for _ in range(args.repeats):  # interleaved, so that a drift in the machine's speed hits both alike
        for name in seconds:
            seconds[name] = min(seconds[name], timed(lambda: shared_loop(x, y, config, name)))

    compile_note = "skipped (--no-compile)"
    if not args.no_compile:
        cache_dir, previous = tempfile.mkdtemp(prefix="inductor-"), os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        try:
            # An empty inductor cache: what the first training on a fresh machine pays.
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
            torch._dynamo.reset()
            cold = timed(lambda: shared_loop(x_warm, y_warm, one_epoch, "compile")) - eager_warm_s
            torch._dynamo.reset()  # about what a new worker process pays, with the disk cache now warm
            warm_cache = timed(lambda: shared_loop(x_warm, y_warm, one_epoch, "compile")) - eager_warm_s
            seconds["compile"] = min(timed(lambda: shared_loop(x, y, config, "compile")) for _ in range(args.repeats))
            compile_note = (f"compile time {cold:.1f} s with an empty inductor cache, {warm_cache:.1f} s again from "
                            f"the warm disk cache after torch._dynamo.reset(); the timed run above excludes both")
        except Exception as e:  # inductor needs a C++ compiler and a supported platform
            compile_note = f"unavailable on this machine: {one_line(e)}"
        finally:
            torch._dynamo.reset()
            shutil.rmtree(cache_dir, ignore_errors=True)
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous

    plain_s = timed(lambda: plain_loop(model(), images.numpy(), labels.numpy(), config=config, device=device, seed=0,
                                       loader_workers=args.loader_workers))

    processed = epochs * n
    rate = {name: processed / s for name, s in seconds.items()}
    plain_rate = processed / plain_s
    peaks = {bits: matmul_peak_gflops(device, args.matmul_size, dtype=dtype)
             for bits, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    flops = training_flops_per_image(model(), data.image_shape, device)

    def share(r: float, bits: str = "fp32") -> str:
        shares = [f"{flops * r / 1e9 / peaks[b]:.1%} of the {b} peak" for b in dict.fromkeys((bits, "fp32", "bf16"))]
        return f"{flops * r / 1e9:6.1f} GFLOP/s = {', '.join(shares)}"

    print(f"plain DataLoader loop:  {plain_rate:10.0f} images/s ({plain_s:.2f} s)")
    print(f"shared harness loop:    {rate['today']:10.0f} images/s ({seconds['today']:.2f} s)  today's loop")
    print(f"shared vs plain:        {rate['today'] / plain_rate:10.2f} x")
    print(f"channels_last loop:     {rate['channels_last']:10.0f} images/s ({seconds['channels_last']:.2f} s)  "
          f"ratio {rate['channels_last'] / rate['today']:.2f} x vs today")
    print(f"bf16 loop:              {rate['bf16']:10.0f} images/s ({seconds['bf16']:.2f} s)  "
          f"ratio {rate['bf16'] / rate['today']:.2f} x vs today (bf16 autocast + channels_last, "
          f"{'native' if precision.cpu_has_native_bf16() or device.type == 'cuda' else 'emulated'} bf16)")
    if "compile" in rate:
        amortised = processed / (seconds["compile"] + cold)
        print(f"torch.compile loop:     {rate['compile']:10.0f} images/s ({seconds['compile']:.2f} s)  "
              f"ratio {rate['compile'] / rate['today']:.2f} x vs today, after compiling")
        print(f"  incl. cold compile:   {amortised:10.0f} images/s ({seconds['compile'] + cold:.2f} s)  "
              f"ratio {amortised / rate['today']:.2f} x vs today")
        print(f"  {compile_note}")
    else:
        print(f"torch.compile loop:     {compile_note}")
    print(f"speed-up:               {rate['bf16'] / rate['today']:10.2f} x (bf16 loop vs today's fp32 loop, "
          f"{torch.get_num_threads()} thread(s))")
    best = max(rate, key=rate.get)
    print(f"best vs today's loop:   {best}, ratio {rate[best] / rate['today']:.2f} x"
          + (" (compile time excluded)" if best == "compile" else ""))
    print(f"training FLOPs/image:   {flops / 1e6:10.2f} MFLOP (forward x 3)")
    for bits, peak in peaks.items():
        print(f"{bits} matmul peak:       {peak:10.1f} GFLOP/s ({args.matmul_size} x {args.matmul_size}, best of 5)")
    for name in rate:
        label = "shared loop achieves:" if name == "today" else f"{name} achieves:"
        print(f"{label:<23} {share(rate[name], VARIANTS[name][0])}")

    if args.curve_images > 0:
        early_stopping(args, data, device)


def early_stopping(args, data, device: torch.device) -> None:
    """The val curve of each `--curve-archs` model under the default preset's TrainConfig."""
    from bench.data.splits import make_splits

    preset = get_preset("default")
    config = preset.train.with_(**DATASETS.get(args.dataset).train_overrides.get(preset.name, {}))
    splits = make_splits(data, 0, **preset.caps())
    task = data.default_task
    owner = splits.owner[:args.curve_images]
    x, y = as_float(data.images[owner]), data.labels[task][owner]
    x_val, y_val = as_float(data.images[splits.val]), data.labels[task][splits.val]
    print(f"early stopping: default preset's TrainConfig (epochs {config.epochs}, patience {config.patience}, "
          f"lr {config.lr:g}, batch {config.batch_size}, augment {config.augment}); {len(x)} of its "
          f"{len(splits.owner)} owner images, its {len(x_val)} val images, seed 0")
    for arch in [a.strip() for a in args.curve_archs.split(",") if a.strip()]:
        torch.manual_seed(0)
        model = build_classifier(arch, data.image_shape, data.num_classes(task))
        c = val_curve(model, x, y, x_val, y_val, config=config, device=device, seed=0)
        scores = c["scores"]
        noise = math.sqrt(max(scores[-1] * (1 - scores[-1]), 1e-12) / len(x_val))
        if c["epochs_run"] < config.epochs:
            stop = f"stopped early after epoch {c['epochs_run']} of {config.epochs}"
        elif c["epochs_run"] - c["best_epoch"] >= config.patience:
            stop = f"ran all {config.epochs} epochs (patience ran out at the last one)"
        else:
            stop = f"ran all {config.epochs} epochs"
        print(f"  {arch}: val accuracy by epoch {' '.join(f'{s:.4f}' for s in scores)}; best epoch "
              f"{c['best_epoch']}, {stop} (one val s.e. {noise:.4f})")
        epoch_s = sum(c["epoch_s"]) / len(c["epoch_s"])
        val_s = sum(c["val_s"]) / len(c["val_s"])
        # Per image, scaled to the default preset's own split sizes on this dataset.
        full = (val_s / len(x_val) * len(splits.val)) / (epoch_s / len(x) * len(splits.owner))
        print(f"  {arch}: one epoch {epoch_s:.2f} s, one val pass {val_s:.2f} s: a val pass costs "
              f"{val_s / epoch_s:.1%} of an epoch here, {full:.1%} at the preset's sizes "
              f"({len(splits.owner)} owner, {len(splits.val)} val); ratio per image "
              f"{(val_s / len(x_val)) / (epoch_s / len(x)):.2f}")


if __name__ == "__main__":
    main()
