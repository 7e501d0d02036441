"""The harness's shared training loop vs a plain DataLoader loop, and its share of the matmul peak.

    python -m bench.benchmarks.training_loop --n-images 10000 --steps 200 --threads 2

Both loops train `build_classifier("cnn", ...)` with AdamW + OneCycle, the same batch
size, the same number of steps and the same augmentation (shift by up to 2 px with
edge padding, horizontal flip):
  - shared: `bench.training.train`, tensors on the device, batches sliced from a
    seeded permutation, augmentation vectorised on the batch;
  - plain: the way a typical research script does it, a `torch.utils.data.DataLoader`
    over uint8 images turned into PIL images one at a time, with torchvision's
    RandomCrop(padding) + RandomHorizontalFlip + ToTensor per sample.
The peak is the best of a few large fp32 `torch.matmul`s; the model's training FLOPs
per image are its forward FLOPs (counted by torch's FlopCounterMode) x 3, the usual
estimate for forward + backward.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench.models import build_classifier
from bench.training import TrainConfig, as_float, resolve_device, train


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


def per_sample_transform(size: int, flip: bool = True) -> transforms.Compose:
    steps = [transforms.RandomCrop(size, padding=2, padding_mode="edge")]
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    return transforms.Compose([*steps, transforms.ToTensor()])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(model, images: np.ndarray, labels: np.ndarray, *, config: TrainConfig, device: torch.device,
               seed: int, loader_workers: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = model.to(device).train()
    data = PILImages(images, labels, per_sample_transform(images.shape[-1], config.flip))
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


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n matmul (2 n^3 FLOPs) over `repeats` tries, after one warm-up."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or synthetic for tests")
    parser.add_argument("--data-dir", type=Path, help="where the dataset lives (default: the loader's own search)")
    parser.add_argument("--n-images", type=int, default=10000, help="training subset size (default 10000)")
    parser.add_argument("--steps", type=int, default=200,
                        help="optimiser steps, rounded to whole epochs over the subset (default 200)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="DataLoader worker processes of the plain loop (default 0: they would share the "
                             "same cores as the training threads)")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n peak matmul (default 2048)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    from bench.registry import DATASETS
    data = DATASETS.create(args.dataset, {}).load(args.data_dir)
    images, labels = data.images[data.train_idx][:args.n_images], data.labels[data.default_task][data.train_idx][:args.n_images]
    n = len(images)
    steps_per_epoch = math.ceil(n / args.batch_size)
    epochs = max(1, round(args.steps / steps_per_epoch))
    steps = epochs * steps_per_epoch
    config = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=2e-3, augment=True)
    n_classes = data.num_classes(data.default_task)

    def model():
        torch.manual_seed(0)
        return build_classifier("cnn", data.image_shape, n_classes)

    def shared_loop(x, y, cfg):
        return train(model(), lambda m, xb, yb: F.cross_entropy(m(xb), yb), x, y, config=cfg, device=device,
                     seed=0)

    print(f"machine: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, device {device}, "
          f"torch {torch.__version__}")
    print(f"data: {n} {args.dataset} images {tuple(data.image_shape)}, {steps} steps of batch {args.batch_size} "
          f"({epochs} epochs), model cnn")
    x, y = as_float(images), labels
    shared_loop(x[:2 * args.batch_size], y[:2 * args.batch_size], config.with_(epochs=1))  # warm-up: allocator, kernels
    synchronize(device)
    start = time.perf_counter()
    shared_loop(x, y, config)
    synchronize(device)
    shared_s = time.perf_counter() - start

    start = time.perf_counter()
    plain_loop(model(), images.numpy(), labels.numpy(), config=config, device=device, seed=0,
               loader_workers=args.loader_workers)
    synchronize(device)
    plain_s = time.perf_counter() - start

    processed = epochs * n
    shared_rate, plain_rate = processed / shared_s, processed / plain_s
    peak = matmul_peak_gflops(device, args.matmul_size)
    flops = training_flops_per_image(model(), data.image_shape, device)
    achieved = flops * shared_rate / 1e9
    print(f"plain DataLoader loop:  {plain_rate:10.0f} images/s ({plain_s:.2f} s)")
    print(f"shared harness loop:    {shared_rate:10.0f} images/s ({shared_s:.2f} s)")
    print(f"speed-up:               {shared_rate / plain_rate:10.2f} x")
    print(f"training FLOPs/image:   {flops / 1e6:10.2f} MFLOP (forward x 3)")
    print(f"fp32 matmul peak:       {peak:10.1f} GFLOP/s ({args.matmul_size} x {args.matmul_size}, best of 5)")
    print(f"shared loop achieves:   {achieved:10.1f} GFLOP/s = {achieved / peak:.1%} of peak")


if __name__ == "__main__":
    main()
