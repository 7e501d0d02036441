"""owner / attacker / val / test splits, drawn once per seed (DESIGN section 3)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data.base import ImageDataset
from bench.storage import digest_json


@dataclass(frozen=True)
class Splits:
    """Index tensors into `ImageDataset.images`. owner and attacker are disjoint."""

    owner: torch.Tensor
    attacker: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    seed: int

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("owner", "attacker", "val", "test")}

    def digest(self) -> str:
        """Identifies the exact indices (recorded with every result)."""
        return digest_json({k: getattr(self, k).tolist() for k in ("owner", "attacker", "val", "test")})[:16]


def tuning_splits(splits: Splits) -> Splits:
    """For hyperparameter tuning: half of `val` stays `val`, the other half plays `test`.

    Tuning then never looks at the real test split (OpenOOD's rule).
    """
    half = len(splits.val) // 2
    return Splits(owner=splits.owner, attacker=splits.attacker, val=splits.val[:half], test=splits.val[half:],
                  seed=splits.seed)


def make_splits(data: ImageDataset, seed: int, *, val_fraction: float = 0.1,
                max_owner: int | None = None, max_attacker: int | None = None,
                max_val: int | None = None, max_test: int | None = None) -> Splits:
    """Split the official train part into owner / attacker (halves) and val.

    The source's own validation partition is used as `val` when it has one.
    Caps (from the preset) take a seeded random subset, so smaller presets
    still sample every class.
    """
    g = torch.Generator().manual_seed(seed)
    train = data.train_idx[torch.randperm(len(data.train_idx), generator=g)]
    if data.val_idx is not None:
        val = data.val_idx[torch.randperm(len(data.val_idx), generator=g)]
    else:
        n_val = max(1, int(round(val_fraction * len(train))))
        val, train = train[:n_val], train[n_val:]
    half = len(train) // 2
    owner, attacker = train[:half], train[half:2 * half]
    test = data.test_idx[torch.randperm(len(data.test_idx), generator=g)]
    return Splits(
        owner=owner[:max_owner].sort().values,
        attacker=attacker[:max_attacker].sort().values,
        val=val[:max_val].sort().values,
        test=test[:max_test].sort().values,
        seed=seed,
    )
