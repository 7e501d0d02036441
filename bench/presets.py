"""Presets: how much data and training a run spends. Recorded in every result."""
from __future__ import annotations

from dataclasses import dataclass, field

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
    # Images of each released split (attacker, val, test) for defenses marked `costly_release`
    # (per-image optimisation, e.g. FMD); None releases them all. See RunSpec.max_release.
    max_costly_release: int | None = None
    description: str = ""
    dataset: str | None = None          # the preset's dataset when --dataset is not given
    # Hyperparameter defaults by plugin name, applied below any --set (e.g. a paper's own settings).
    plugin_defaults: dict = field(default_factory=dict)

    def caps(self) -> dict:
        return {k: getattr(self, k) for k in ("max_owner", "max_attacker", "max_val", "max_test")}


PRESETS = {
    "smoke": Preset("smoke", TrainConfig(epochs=1, batch_size=64, lr=5e-3, augment=False),
                    max_owner=384, max_attacker=384, max_val=128, max_test=256, max_costly_release=64,
                    description="seconds: wiring checks, numbers meaningless"),
    "default": Preset("default", TrainConfig(epochs=4, batch_size=128, lr=5e-3, augment=False, patience=2),
                      max_val=5000, max_costly_release=2000,
                      description="minutes on 2 CPU cores: full owner/attacker halves, 4 epochs"),
    "full": Preset("full", TrainConfig(epochs=30, batch_size=128, lr=2e-3, augment=True, patience=5),
                   description="GPU: augmentation and up to 30 epochs with early stopping"),
    # What "Variational Feature Compression for Model-Specific Representations" (2026) states:
    # CIFAR-100, a frozen target, two phases (warm-up without mask, then a mask recomputed
    # periodically). It does not state epochs, latent size or schedule lengths in the text
    # available here; those values are ours, sized for a GPU, and recorded in every result.
    "paper": Preset("paper", TrainConfig(epochs=60, batch_size=128, lr=1e-3, augment=True, patience=10),
                    dataset="cifar100",
                    plugin_defaults={"vfc": {"latent_dim": 256, "keep": 0.25, "warmup": 0.3, "mask_every": 100}},
                    description="the seed papers' settings as far as they state them (VFC: CIFAR-100, two-phase "
                                "mask schedule); no caps; GPU, hours"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise unknown("preset", name, PRESETS)
    return PRESETS[name]
