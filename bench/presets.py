"""Presets: how much data and training a run spends. Recorded in every result."""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import unknown
from bench.training import TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    train: TrainConfig
    max_owner: int | None = None
    max_attacker: int | None = None
    max_val: int | None = None
    max_test: int | None = None
    description: str = ""

    def caps(self) -> dict:
        return {k: getattr(self, k) for k in ("max_owner", "max_attacker", "max_val", "max_test")}


PRESETS = {
    "smoke": Preset("smoke", TrainConfig(epochs=1, batch_size=64, lr=5e-3, augment=False),
                    max_owner=384, max_attacker=384, max_val=128, max_test=256,
                    description="seconds: wiring checks, numbers meaningless"),
    "default": Preset("default", TrainConfig(epochs=4, batch_size=128, lr=5e-3, augment=False, patience=2),
                      max_val=5000,
                      description="minutes on 2 CPU cores: full owner/attacker halves, 4 epochs"),
    "full": Preset("full", TrainConfig(epochs=30, batch_size=128, lr=2e-3, augment=True, patience=5),
                   description="GPU: augmentation and up to 30 epochs with early stopping"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise unknown("preset", name, PRESETS)
    return PRESETS[name]
