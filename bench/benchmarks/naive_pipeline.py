"""The naive side of `end_to_end`: what a typical research script does for each run on its own.

It decodes the raw data, trains the designated model, fits the defense, releases the three
splits and trains the attacker's models, all through DataLoaders with per-sample torchvision
transforms, sharing and caching nothing between runs.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import transforms

from bench.benchmarks.call_counts import record
from bench.benchmarks.training_loop import PILImages, per_sample_transform
from bench.models import Decoder, build_classifier, is_image_like
from bench.training import TrainConfig, as_float


def decode_raw(dataset: str, data_dir: Path | None):
    """The whole dataset decoded from its source files, as every naive run does afresh."""
    from bench.data import fashion_mnist as fm
    from bench.data.base import ImageDataset
    from bench.registry import DATASETS

    if dataset == "synthetic":  # generated, never cached: loading it is its "decode"
        return DATASETS.create("synthetic", {}).load(None)
    if dataset != "fashion-mnist":
        raise SystemExit(f"--dataset {dataset}: the naive pipeline decodes fashion-mnist or synthetic only")
    root = data_dir or fm.DEBIAN_DIR

    def read(key):
        stem = fm.FILES[key]
        gz = root / f"{stem}.gz"
        return fm.read_idx(gz if gz.exists() else root / stem)

    images = np.concatenate([read("train_images"), read("test_images")])
    labels = torch.from_numpy(np.concatenate([read("train_labels"), read("test_labels")]).astype(np.int64))
    n_train = len(read("train_labels"))
    return ImageDataset(name="fashion-mnist", images=torch.from_numpy(images).unsqueeze(1).contiguous(),
                        labels={"class": labels, "group": torch.tensor(fm.CLASS_TO_GROUP)[labels]},
                        classes={"class": fm.CLASSES, "group": fm.GROUPS}, train_idx=torch.arange(n_train),
                        test_idx=torch.arange(n_train, len(labels)), default_task="class", private_task="group")


class TransformedTensors(Dataset):
    """Float tensors (released data) with a per-sample transform, like a research script's TensorDataset."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def released_transform(shape, config: TrainConfig):
    # The harness augments only image-shaped data of at least 8 px; so does this.
    if not (config.augment and len(shape) == 3 and min(shape[1:]) >= 8):
        return lambda t: t
    steps = [transforms.RandomCrop(tuple(shape[1:]), padding=2, padding_mode="edge")]
    if config.flip:
        steps.append(transforms.RandomHorizontalFlip())
    return transforms.Compose(steps)


def loader_of(dataset: Dataset, config: TrainConfig, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=workers)


@torch.no_grad()
def batched(model, x: torch.Tensor, device: torch.device, batch: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


def fit_with_loader(model, loader: DataLoader, loss_fn, val_score, *, config: TrainConfig,
                    device: torch.device) -> torch.nn.Module:
    """AdamW + OneCycle over a DataLoader, val every epoch, best weights kept: the harness's recipe, plainly."""
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * len(loader),
                                                pct_start=0.15)
    best, best_state, stale = -math.inf, None, 0
    for _ in range(config.epochs):
        model.train()
        for xb, yb in loader:
            loss = loss_fn(model(xb.to(device)), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        score = val_score(model)
        if score > best:
            best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    return model.eval()


def accuracy_on(x: torch.Tensor, y: torch.Tensor, device: torch.device):
    return lambda m: (batched(m, x, device).argmax(1) == y).float().mean().item()


class NaiveRun:
    """One (seed, attacker) run from raw files to a number, sharing nothing with any other run."""

    def __init__(self, args, preset, device: torch.device, seed: int, defense: str | None = None,
                 defense_params: dict | None = None, count_file: str | None = None):
        from bench.data.splits import make_splits

        self.args, self.config, self.device, self.seed = args, preset.train, device, seed
        self.defense, self.defense_params = defense or args.defense, defense_params or {}
        self.count_file = count_file
        self.data = decode_raw(args.dataset, args.data_dir)
        self.splits = make_splits(self.data, seed, **preset.caps())
        self.task = self.data.default_task

    def images(self, split: str) -> torch.Tensor:
        return self.data.images[getattr(self.splits, split)]

    def labels(self, split: str, task: str) -> torch.Tensor:
        return self.data.labels[task][getattr(self.splits, split)]

    def clean_classifier(self, arch: str, split: str, task: str) -> torch.nn.Module:
        """A classifier trained on clean uint8 images, one PIL image at a time."""
        record(self.count_file, "designated" if split == "owner" else "clean")
        torch.manual_seed(self.seed)
        model = build_classifier(arch, self.data.image_shape, self.data.num_classes(task))
        transform = per_sample_transform(self.data.image_shape[-1], self.config.flip) if self.config.augment \
            else transforms.ToTensor()
        dataset = PILImages(self.images(split).numpy(), self.labels(split, task).numpy(), transform)
        val = accuracy_on(as_float(self.images("val")), self.labels("val", task), self.device)
        return fit_with_loader(model, loader_of(dataset, self.config, self.args.loader_workers), F.cross_entropy,
                               val, config=self.config, device=self.device)

    def released_classifier(self, model, x, y, x_val, y_val, config: TrainConfig) -> torch.nn.Module:
        dataset = TransformedTensors(x, y, released_transform(tuple(x.shape[1:]), config))
        return fit_with_loader(model, loader_of(dataset, config, self.args.loader_workers), F.cross_entropy,
                               accuracy_on(x_val, y_val, self.device), config=config, device=self.device)

    def run(self, attacker: str) -> float:
        from bench.params import recorded_params
        from bench.protocol import DataSpec, FitData
        from bench.registry import ATTACKERS, DEFENSES

        t, device, cfg = self.task, self.device, self.config
        target = self.clean_classifier("cnn", "owner", t)
        defense = DEFENSES.create(self.defense, recorded_params(self.defense, self.defense_params))
        spec = DataSpec(self.data.image_shape, self.data.num_classes(t), t)
        defense.fit(FitData(as_float(self.images("owner")), self.labels("owner", t), as_float(self.images("val")),
                            self.labels("val", t), spec, device, cfg), target, seed=self.seed)
        released = {s: defense.release(as_float(self.images(s)), self.labels(s, t)) for s in ("attacker", "val", "test")}
        r_train, r_val, r_test = released["attacker"], released["val"], released["test"]
        hp = ATTACKERS.create(attacker, {})  # the attacker's hyperparameters, as the harness uses them
        task = self.data.private_task if hp.uses_private_task else t
        y_train, y_val, y_test = (self.labels(s, task) for s in ("attacker", "val", "test"))
        if attacker == "transfer":
            accs = [(batched(self.clean_classifier(arch, "attacker", task), r_test, device).argmax(1) == y_test)
                    .float().mean().item() for arch in dict.fromkeys((*hp.archs, "cnn"))]
            return max(accs)
        if attacker == "finetune":
            pick = torch.randperm(len(r_train), generator=torch.Generator().manual_seed(self.seed))[:hp.budget]
            model = self.clean_classifier("cnn", "attacker", task)
            model = self.released_classifier(model, r_train[pick], y_train[pick], r_val, y_val,
                                             cfg.with_(epochs=hp.epochs, lr=hp.lr))
        elif attacker in ("adaptive", "attribute"):
            torch.manual_seed(self.seed)
            arch = "cnn" if is_image_like(r_train.shape[1:], self.data.image_shape) else "auto"
            model = build_classifier(arch, tuple(r_train.shape[1:]), self.data.num_classes(task))
            model = self.released_classifier(model, r_train, y_train, r_val, y_val, cfg)
        elif attacker == "inversion":
            torch.manual_seed(self.seed)
            pick = torch.randperm(len(r_train), generator=torch.Generator().manual_seed(self.seed))[:hp.max_pairs]
            decoder = Decoder(tuple(r_train.shape[1:]), self.data.image_shape, width=hp.width, depth=hp.depth)
            pairs = TensorDataset(r_train[pick], as_float(self.images("attacker")[pick]))
            config = cfg.with_(epochs=hp.epochs, lr=hp.lr, augment=False)
            x_val = as_float(self.images("val"))
            decoder = fit_with_loader(decoder, loader_of(pairs, config, self.args.loader_workers), F.mse_loss,
                                      lambda m: -F.mse_loss(batched(m, r_val, device), x_val).item(),
                                      config=config, device=device)
            mse = F.mse_loss(batched(decoder, r_test, device), as_float(self.images("test"))).item()
            return 10 * math.log10(1 / max(mse, 1e-12))  # PSNR
        else:
            raise SystemExit(f"the naive pipeline has no {attacker} attacker")
        return (batched(model, r_test, device).argmax(1) == y_test).float().mean().item()
