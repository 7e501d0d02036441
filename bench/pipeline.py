"""One run, from data to metrics: designated model, fitted defense, released splits,
attacker, numbers. Every expensive shared step goes through the artifact cache, so
the second attacker on the same defense trains nothing the first one trained.
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench import metrics as M
from bench import code_digest, precision, progress
from bench.artifacts import Artifacts
from bench.data.base import ImageDataset
from bench.data.digest import content_digest
from bench.data.splits import Splits, make_splits, tuning_splits
from bench.errors import BenchError
from bench.models import build_classifier
from bench.presets import Preset, get_preset
from bench.protocol import AttackContext, DataSpec, Defense, FitData
from bench.registry import ATTACKERS, DATASETS, DEFENSES
from bench.params import recorded_params
from bench.runspec import SCHEMA, RunSpec
from bench.storage import atomic_write_bytes
from bench.training import TrainConfig, as_float, fit_classifier, predict

N_SAMPLES = 8  # test images kept per inversion run for the image grid
RELEASED_SPLITS = ("attacker", "val", "test")


def released_splits(attacker: str) -> tuple[str, ...]:
    """The splits a run releases: all three, or only `test` for an attacker that never trains on releases."""
    return RELEASED_SPLITS if ATTACKERS.get(attacker).trains_on_release else ("test",)


@lru_cache(maxsize=4)
def load_dataset(name: str, params_items: tuple, data_dir: str | None) -> ImageDataset:
    loader = DATASETS.create(name, dict(params_items))
    return loader.load(Path(data_dir) if data_dir else None)


def model_splits_of(data: ImageDataset, seed: int, preset: str, eval_split: str) -> Splits:
    """The splits the shared models of a run train and are scored on (before any release cap)."""
    splits = make_splits(data, seed, **get_preset(preset).caps())
    return tuning_splits(splits) if eval_split == "val" else splits


@lru_cache(maxsize=16)
def _data_digest(name: str, params_items: tuple, data_dir: str | None, seed: int, preset: str,
                 eval_split: str) -> str:
    data = load_dataset(name, params_items, data_dir)
    s = model_splits_of(data, seed, preset, eval_split)
    return content_digest(data, torch.cat([s.owner, s.attacker, s.val, s.test]))


def data_digest(spec: RunSpec, data_dir: str | None) -> str:
    """The content digest of the data `spec` is computed from: images and labels of the splits it uses."""
    return _data_digest(spec.dataset, tuple(sorted(spec.dataset_params.items())), data_dir, spec.seed,
                        spec.preset, spec.eval_split)


@lru_cache(maxsize=8)
def _dataset_digest(name: str, params_items: tuple, data_dir: str | None) -> str:
    data = load_dataset(name, params_items, data_dir)
    return content_digest(data, torch.arange(len(data.images)))


def dataset_digest(spec: RunSpec, data_dir: str | None) -> str:
    """The content digest of the whole dataset `spec` names: its version, the same for every seed and
    preset (a run's `data_digest` covers only the splits it uses, which differ by seed)."""
    return _dataset_digest(spec.dataset, tuple(sorted(spec.dataset_params.items())), data_dir)


def data_name(spec: RunSpec, data_dir: str | None) -> str | None:
    """The name of the directory a dataset of the user's own files came from (`folder`), which its records
    keep to label it; None for a built-in dataset, whose name says which it is."""
    return load_dataset(spec.dataset, tuple(sorted(spec.dataset_params.items())), data_dir).meta.get("name")


def forget_loaded_data() -> None:
    """Drop this process's decoded datasets and their digests: the next use reads the source again.

    Called before a sweep plans, so that data edited since an earlier sweep in the same process
    (a notebook, the tests) is seen as it is now.
    """
    load_dataset.cache_clear()
    _data_digest.cache_clear()
    _dataset_digest.cache_clear()


def release_subset(splits: Splits, cap: int, seed: int) -> Splits:
    """A seeded subset of at most `cap` images of each released split (attacker, val, test).

    It depends only on the splits, the cap and the seed, so a capped run and its
    identity twin release exactly the same images. `owner` is never released.
    """
    if cap < 1:
        raise ValueError(f"release cap {cap}: must be >= 1")
    g = torch.Generator().manual_seed(seed)

    def subset(idx: torch.Tensor) -> torch.Tensor:
        return idx[torch.randperm(len(idx), generator=g)[:cap]].sort().values

    return Splits(owner=splits.owner, attacker=subset(splits.attacker), val=subset(splits.val),
                  test=subset(splits.test), seed=splits.seed)


@dataclass
class Stage:
    """The data and shared artifacts of one (dataset, seed, preset, target, defense).

    `splits` is what is released and evaluated; `model_splits` what the shared models
    (designated model, the attacker's clean models, the defense's fit) train on. They
    differ only under a release cap (`RunSpec.max_release`): a costly defense then
    releases a subset, while its designated model stays the one every other defense gets.
    """

    spec: RunSpec
    data: ImageDataset
    splits: Splits
    preset: Preset
    train: TrainConfig       # the preset's, with the dataset's own overrides
    device: torch.device
    artifacts: Artifacts
    model_splits: Splits
    data_digest: str         # content of the data at `model_splits` (bench.data.digest)

    @classmethod
    def open(cls, spec: RunSpec, data_dir: str | None, device: torch.device, artifacts: Artifacts,
             expected_digest: str | None = None) -> "Stage":
        """`expected_digest`: the data digest the sweep was planned with; other data is an error."""
        with progress.stage("data"):
            digest = data_digest(spec, data_dir)
            if expected_digest is not None and digest != expected_digest:
                forget_loaded_data()  # a long-lived worker may hold data decoded before the source changed
                digest = data_digest(spec, data_dir)
                if digest != expected_digest:
                    raise BenchError(f"the data of dataset {spec.dataset} changed after this sweep was planned "
                                     f"(digest {expected_digest[:12]}, now {digest[:12]}); run the command again")
            data = load_dataset(spec.dataset, tuple(sorted(spec.dataset_params.items())), data_dir)
        preset = get_preset(spec.preset)
        model_splits = model_splits_of(data, spec.seed, spec.preset, spec.eval_split)
        splits = model_splits
        if spec.max_release is not None:
            splits = release_subset(model_splits, spec.max_release, spec.seed)
        train = preset.train.with_(**DATASETS.get(spec.dataset).train_overrides.get(preset.name, {}))
        return cls(spec, data, splits, preset, train, device, artifacts, model_splits, digest)

    # --- data --------------------------------------------------------------------------
    def images(self, split: str, *, full: bool = False) -> torch.Tensor:
        """Images of the released part of a split, or (`full`) of all of it, which the shared models train on."""
        return as_float(self.data.images[self._indices(split, full)])

    def labels(self, split: str, task: str, *, full: bool = False) -> torch.Tensor:
        return self.data.labels[self.data.check_task(task)][self._indices(split, full)]

    def _indices(self, split: str, full: bool) -> torch.Tensor:
        return getattr(self.model_splits if full else self.splits, split)

    def base_key(self) -> dict:
        s = self.spec
        key = {"schema": SCHEMA, "dataset": s.dataset, "dataset_params": s.dataset_params,
               "splits": self.model_splits.digest(), "data": self.data_digest, "train": asdict(self.train),
               "seed": s.seed, "harness": code_digest.harness_digest()}
        # Every artifact is computed at one precision, and a record states it: a bf16 run never reuses an
        # fp32 model (or the reverse). fp32 keys stay what they were before precision was recorded.
        if precision.active(self.device) != "fp32":
            key["precision"] = precision.active(self.device)
        return key

    # --- shared artifacts -----------------------------------------------------------------
    def target_key(self) -> dict:
        return {**self.base_key(), "role": "target", "task": self.spec.target_task, "arch": self.spec.target_arch}

    def target(self) -> torch.nn.Module:
        return self._classifier(self.target_key(), "owner", self.spec.target_task, self.spec.target_arch)

    def clean_model(self, task: str, arch: str) -> torch.nn.Module:
        """An off-the-shelf model trained on the attacker's clean images (no defense involved)."""
        key = {**self.base_key(), "role": "attacker-clean", "task": task, "arch": arch}
        return self._classifier(key, "attacker", task, arch)

    def _classifier(self, key: dict, split: str, task: str, arch: str) -> torch.nn.Module:
        n_classes = self.data.num_classes(task)

        def build():
            torch.manual_seed(self.spec.seed)
            model = build_classifier(arch, self.data.image_shape, n_classes)
            with progress.stage("designated model" if key["role"] == "target" else "attacker's clean model"):
                model = fit_classifier(model, self.images(split, full=True), self.labels(split, task, full=True),
                                       val=(self.images("val", full=True), self.labels("val", task, full=True)),
                                       config=self.train,
                                       device=self.device, seed=self.spec.seed, desc=f"{key['role']} {arch}")
            return {"state": model.state_dict()}

        obj = self.artifacts.get("model", key, build)
        model = build_classifier(arch, self.data.image_shape, n_classes)
        model.load_state_dict(obj["state"])
        return model.to(self.device).eval()

    def defense_key(self) -> dict:
        # The defense's code: an edited plugin never reuses a fit or release its old code made.
        return {**self.target_key(), "defense": self.spec.defense, "defense_params": self.spec.defense_params,
                "defense_code": code_digest.plugin_digest("defense", self.spec.defense)}

    def data_spec(self) -> DataSpec:
        t = self.spec.target_task
        return DataSpec(self.data.image_shape, self.data.num_classes(t), t)

    def defense(self) -> tuple[Defense, float]:
        """The fitted defense and the seconds its fit took (when it was first built)."""
        target = self.target()
        defense = DEFENSES.create(self.spec.defense, recorded_params(self.spec.defense, self.spec.defense_params))
        fitted = []

        def build():
            t = self.spec.target_task
            data = FitData(self.images("owner", full=True), self.labels("owner", t, full=True),
                           self.images("val", full=True), self.labels("val", t, full=True),
                           self.data_spec(), self.device, self.train)
            with progress.stage(f"defense {self.spec.defense} fit"):
                defense.fit(data, target, seed=self.spec.seed)
            fitted.append(True)
            return {"state": defense.state_dict()}

        obj = self.artifacts.get("defense", self.defense_key(), build)
        if not fitted:
            defense.restore(obj["state"], target, self.data_spec(), self.device)
        return defense, float(obj["build_s"])

    def released(self, defense: Defense, split: str) -> tuple[torch.Tensor, float]:
        """Released data of a split and the milliseconds per image its release took."""
        def build():
            x = self.images(split)
            y = self.labels(split, self.spec.target_task)  # used only by defenses that need labels
            start = time.perf_counter()
            r = defense.release(x, y, desc=f"release {split}")
            return {"x": r, "ms_per_image": 1000 * (time.perf_counter() - start) / len(x)}

        key = {**self.defense_key(), "split": split}
        if self.spec.max_release is not None:
            key["released_indices"] = self.splits.digest()
        obj = self.artifacts.get("release", key, build)
        return obj["x"], float(obj["ms_per_image"])


def run_attack(spec: RunSpec, *, data_dir: str | None, device: torch.device, artifacts: Artifacts,
               expected_digest: str | None = None) -> tuple[dict, dict]:
    """Execute one run. Returns (metrics, extras): extras holds split sizes, timings, samples."""
    stage = Stage.open(spec, data_dir, device, artifacts, expected_digest)
    t_task, a_task = spec.target_task, spec.attack_task
    defense, fit_s = stage.defense()
    released = {s: stage.released(defense, s) for s in released_splits(spec.attacker)}
    r_train, r_val, r_test = (released[s][0] if s in released else None for s in RELEASED_SPLITS)

    x_test, y_test = stage.images("test"), stage.labels("test", t_task)
    M.chance(y_test)  # raises on a test split of one designated class: no accuracy on it means anything
    clean_logits = predict(defense.target_, x_test, device=device)
    out = M.designated_metrics(clean_logits, defense.designated(r_test), y_test)
    out.update(fit_s=fit_s, release_ms_per_image=released["test"][1],
               released_bytes_per_image=r_test[0].numel() * r_test.element_size())
    if r_test.shape == x_test.shape:
        # How far an image-shaped release is from its input (FMD's image-quality trade-off).
        out.update({f"release_{k}": v for k, v in M.image_metrics(r_test, x_test).items()})

    attacker = ATTACKERS.create(spec.attacker, recorded_params(spec.attacker, spec.attacker_params, ATTACKERS))
    if attacker.predicts == "images":
        targets, val_targets = stage.images("attacker"), stage.images("val")
    else:
        targets, val_targets = stage.labels("attacker", a_task), stage.labels("val", a_task)
    context = AttackContext(
        task=a_task, num_classes=stage.data.num_classes(a_task), image_shape=stage.data.image_shape,
        released_shape=tuple(r_test.shape[1:]), released_val=r_val, val_targets=val_targets,
        target_arch=spec.target_arch, device=device, train=stage.train,
        clean_model=lambda arch: stage.clean_model(a_task, arch),
    )
    start = time.perf_counter()
    with progress.stage(f"attacker {spec.attacker} fit"):
        attacker.fit(r_train, targets, context=context, seed=spec.seed)
    out["attack_fit_s"] = time.perf_counter() - start
    if attacker.trains_on_release:
        out["attack_images"] = attacker.images_used_  # the labelled released images it learnt from (its budget)
    pred = attacker.predict(r_test)

    extras = {"splits": {**stage.splits.sizes(), "digest": stage.splits.digest(), "seed": spec.seed},
              "train": asdict(stage.train), "released_shape": list(r_test.shape[1:])}
    if attacker.predicts == "images":
        out.update(M.image_metrics(pred, x_test))
        mean_image = stage.images("attacker").mean(0, keepdim=True).expand_as(x_test)
        out.update({f"{k}_chance": v for k, v in M.image_metrics(mean_image, x_test).items()})
        extras["samples"] = {"original": x_test[:N_SAMPLES], "inverted": pred[:N_SAMPLES],
                             "released": r_test[:N_SAMPLES]}
    else:
        y_attack = stage.labels("test", a_task)
        out.update(M.classifier_metrics(pred, y_attack))
        out["chance"] = M.chance(y_attack)
        if a_task != t_task:
            out["derivability"] = M.derivability(stage.labels("owner", t_task, full=True),
                                                 stage.labels("owner", a_task, full=True))
    return out, extras


def save_samples(path: Path, samples: dict) -> None:
    """uint8 arrays in an .npz (no pickles): originals, released (if image-shaped), inversions."""
    arrays = {k: (v.clamp(0, 1) * 255).round().to(torch.uint8).numpy() for k, v in samples.items()
              if v.dim() == 4 and v.shape[1] in (1, 3)}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
