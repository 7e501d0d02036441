"""FMD's release at bf16 against today's fp32 release, and the loop before its fused steps.

    python -m bench.benchmarks.fmd_release --images 64 --repeats 3 --threads 2

For Fashion-MNIST-shaped (1x28x28) and CIFAR-10-shaped (3x32x32) images, the
harness's designated model (`build_classifier("cnn", ...)`, random weights: the
cost of the steps does not depend on them) and random images, every release runs
through the same `Defense.release` plumbing (batches of `FMD.batch_size`, no_grad,
the same seeded random starts), interleaved, `--repeats` times each after a short
warm-up; the figures are medians:
  - old: `BaselineFMD`, FMD with the release loop it had before its steps were fused
    (a faithful copy below): every step a forward through the designated model with a
    hook that copies the feature map, BatchNorm as its own op forward and backward; fp32;
  - today: `defenses.fmd.FMD` at fp32, the harness's CPU path before bf16;
  - bf16: the same `FMD` at bf16 precision (bf16 autocast; the steps are channels_last
    either way), what the harness runs by default on CPUs with native bf16 and on CUDA.
Each image costs `steps` forward + input-gradient passes plus one clean forward.
Their FLOPs are counted by torch's FlopCounterMode on one step of the old loop (the
forward, and the backward w.r.t. the input only: the model's weights are frozen),
and the achieved GFLOP/s are set against the best of a few large matmuls in the
release's own precision (`training_loop.matmul_peak_gflops`). The last lines per dataset
are the share of released pixels bit-identical to today's release (a sign step turns on
the gradient's sign: rounding flips it only at near-ties, more often in bf16) and the
feature distortion, FMD's objective, that each release reached.
`--nchw` adds an informational row with today's release in NCHW, to show what channels_last gives.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import defenses.fmd as fmd
from bench import precision
from bench.benchmarks.training_loop import matmul_peak_gflops, synchronize
from bench.models import build_classifier
from bench.protocol import DataSpec, FitData
from bench.training import TrainConfig, resolve_device
from defenses.fmd import FMD, capture_output

SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NUM_CLASSES = 10


class BaselineFMD(FMD):
    """FMD with the release loop it had before its steps were fused (commit 03a4fbd), kept verbatim."""

    def _release(self, xb, yb=None):
        target = self.target_
        with capture_output(dict(target.named_modules())[self.layer_]) as feature:
            clean_logits = target(xb)
            clean_feature = feature["out"].detach()
            y = yb if self.label_source == "gt" else clean_logits.argmax(1)
            low, high = (xb - self.eps).clamp(min=0), (xb + self.eps).clamp(max=1)
            x_adv = (xb + self._random_start(xb)).clamp(0, 1)
            # `release` runs under no_grad; the steps need gradients w.r.t. the input only
            # (the target's parameters have requires_grad False and are never updated).
            with torch.enable_grad():
                for _ in range(self.steps):
                    x_adv.requires_grad_(True)
                    logits = target(x_adv)
                    distortion = (feature["out"] - clean_feature).pow(2).flatten(1).mean(1)
                    ce = F.cross_entropy(logits, y, reduction="none")
                    # Per-image objectives summed: each image's gradient is its own, whatever the batch.
                    objective = (distortion - self.lam * ce).sum()
                    grad, = torch.autograd.grad(objective, x_adv)
                    x_adv = torch.minimum(torch.maximum(x_adv.detach() + self.alpha * grad.sign(), low), high)
        return x_adv.detach()


def step_flops_per_image(defense: FMD, image_shape, device: torch.device, batch: int = 8) -> tuple[float, float]:
    """(FLOPs of one step, of the clean forward) per image, counted on the designated model itself."""
    from torch.utils.flop_counter import FlopCounterMode

    target = defense.target_
    x = torch.rand(batch, *image_shape, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        target(x)
    forward = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        x_adv = x.clone().requires_grad_(True)
        with capture_output(dict(target.named_modules())[defense.layer_]) as feature:
            logits = target(x_adv)
            objective = (feature["out"].pow(2).flatten(1).mean(1) - F.cross_entropy(logits, logits.argmax(1),
                                                                                        reduction="none")).sum()
        objective.backward()  # FlopCounterMode's module hooks reject autograd.grad on a leaf; same work
    return counter.get_total_flops() / batch, forward / batch


def mean_distortion(defense: FMD, x: torch.Tensor, released: torch.Tensor) -> float:
    """FMD's objective, the mean squared change of the designated model's feature map, over the images."""
    with torch.no_grad(), capture_output(dict(defense.target_.named_modules())[defense.layer_]) as feature:
        defense.target_(x)
        clean = feature["out"]
        defense.target_(released)
        return (feature["out"] - clean).pow(2).mean().item()


def fitted(cls, image_shape, device: torch.device, steps: int) -> FMD:
    torch.manual_seed(0)
    target = build_classifier("cnn", image_shape, NUM_CLASSES)
    spec = DataSpec(tuple(image_shape), NUM_CLASSES, "class")
    empty = torch.zeros(0, *image_shape)
    data = FitData(empty, torch.zeros(0, dtype=torch.long), empty, torch.zeros(0, dtype=torch.long), spec, device,
                   TrainConfig())
    return cls(steps=steps).fit(data, target, seed=0)


def timed(defense: FMD, x: torch.Tensor, device: torch.device, bits: str) -> tuple[float, torch.Tensor]:
    with precision.requesting(bits):
        synchronize(device)
        start = time.perf_counter()
        out = defense.release(x)
        synchronize(device)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images released per run and dataset (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed runs of each release (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--steps", type=int, default=100, help="FMD steps (default 100, the paper's and FMD's)")
    parser.add_argument("--datasets", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n peak matmul (default 2048)")
    parser.add_argument("--nchw", action="store_true",
                        help="also time the new release with its steps in NCHW (informational)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = sorted(set(datasets) - set(SHAPES))
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; valid choices: {', '.join(SHAPES)}")

    print(f"machine: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, device {device}, "
          f"torch {torch.__version__}")
    print(f"release: FMD steps {args.steps}, eps 16/255, alpha 4/255, lam 0.01, model cnn (random weights), "
          f"{args.images} random images in batches of {FMD.batch_size}, median of {args.repeats} interleaved runs")
    peaks = {bits: matmul_peak_gflops(device, args.matmul_size, dtype=dtype)
             for bits, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for bits, peak in peaks.items():
        print(f"{bits} matmul peak: {peak:.1f} GFLOP/s ({args.matmul_size} x {args.matmul_size}, best of 5)")

    speed_ups = {}
    for name in datasets:
        shape = SHAPES[name]
        defenses = {"old": fitted(BaselineFMD, shape, device, args.steps),
                    "today": fitted(FMD, shape, device, args.steps),
                    "bf16": fitted(FMD, shape, device, args.steps)}
        bits = {"old": "fp32", "today": "fp32", "bf16": "bf16", "today, NCHW": "fp32"}
        if args.nchw:
            previous = fmd.CHANNELS_LAST_DEVICES
            fmd.CHANNELS_LAST_DEVICES = ()
            try:
                defenses["today, NCHW"] = fitted(FMD, shape, device, args.steps)
            finally:
                fmd.CHANNELS_LAST_DEVICES = previous
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.images, *shape), generator=gen).float().div_(255)
        step_flops, forward_flops = step_flops_per_image(defenses["old"], shape, device)
        flops = args.steps * step_flops + forward_flops
        print(f"{name} {shape}: {step_flops / 1e6:.2f} MFLOP per image and step (forward + input-gradient "
              f"backward, FlopCounterMode), {flops / 1e9:.2f} GFLOP per released image")

        for key, defense in defenses.items():  # warm-up: allocator, kernels, oneDNN primitives
            timed(defense, x[:min(8, len(x))], device, bits[key])
        seconds = {k: [] for k in defenses}
        released = {}
        for r in range(args.repeats):
            order = list(defenses) if r % 2 == 0 else list(defenses)[::-1]
            for key in order:
                s, released[key] = timed(defenses[key], x, device, bits[key])
                seconds[key].append(s)
        rate = {k: args.images / statistics.median(v) for k, v in seconds.items()}
        for key in defenses:
            achieved = flops * rate[key] / 1e9
            print(f"{name}: {key + ' release':26s} {rate[key]:8.2f} img/s ({1000 / rate[key]:7.1f} ms/image), "
                  f"{achieved:7.2f} GFLOP/s = {achieved / peaks[bits[key]]:.1%} of the {bits[key]} peak")
        print(f"{name}: bf16 release speed-up {rate['bf16'] / rate['today']:.2f}x over today's fp32 "
              f"(today {rate['today']:.2f} img/s, bf16 {rate['bf16']:.2f} img/s)")
        speed_ups[name] = rate["bf16"] / rate["today"]
        print(f"{name}: today's release runs {rate['today'] / rate['old']:.2f}x the old loop")
        if args.nchw:
            key = "today, NCHW"
            print(f"{name}: in NCHW today's release runs {rate[key] / rate['old']:.2f}x the old loop")
        same = {k: (released[k] == released["today"]).float().mean().item() for k in ("old", "bf16")}
        reached = {k: mean_distortion(defenses["old"], x, released[k]) for k in ("old", "today", "bf16")}
        print(f"{name}: released pixels bit-identical to today's: bf16 {same['bf16']:.2%}, old loop "
              f"{same['old']:.2%}; feature distortion reached: old {reached['old']:.4g}, today "
              f"{reached['today']:.4g}, bf16 {reached['bf16']:.4g}")
    print(f"speed-up: {min(speed_ups.values()):.2f} x (bf16 release vs today's fp32, the lower of "
          f"{', '.join(f'{k} {v:.2f}x' for k, v in speed_ups.items())})")


if __name__ == "__main__":
    main()
