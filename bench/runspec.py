"""RunSpec: everything that determines one run's numbers, frozen and hashed into its run_id."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from bench.params import config_label
from bench.storage import digest_json

# Bump when a change to the harness makes old results incomparable.
SCHEMA = 2


@dataclass(frozen=True)
class RunSpec:
    defense: str
    attacker: str
    dataset: str
    target_task: str
    attack_task: str
    target_arch: str
    seed: int
    preset: str
    eval_split: str = "test"   # "val" for tuning: half of val is held out and plays the part of test
    defense_params: dict = field(default_factory=dict)
    attacker_params: dict = field(default_factory=dict)
    dataset_params: dict = field(default_factory=dict)
    # At most this many images of each released split (attacker, val, test), a seeded subset:
    # set for defenses whose release is costly (`Preset.max_costly_release`) and kept by the
    # identity twin, so that leakage compares the two runs on the same images.
    max_release: int | None = None

    @property
    def run_id(self) -> str:
        return digest_json({"schema": SCHEMA, **self.to_dict()})[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        # Left out when unset, so the run_id of every spec without a cap is what it was before the field existed.
        if d["max_release"] is None:
            del d["max_release"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**d)

    def on_identity(self, identity_params: dict) -> "RunSpec":
        """The same attack with no defense: the calibration run leakage is measured against.

        Everything else, `max_release` included, is kept: the twin sees the same released subset.
        """
        return replace(self, defense="identity", defense_params=identity_params)

    def defense_key(self) -> dict:
        """What determines the fitted defense (not the attacker)."""
        d = self.to_dict()
        for k in ("attacker", "attacker_params", "attack_task"):
            d.pop(k)
        return d

    def label(self) -> str:
        defense = config_label(self.defense, json.dumps(self.defense_params, sort_keys=True))
        cap = f" (release cap {self.max_release})" if self.max_release is not None else ""
        return f"{defense} x {self.attacker} on {self.dataset}[{self.attack_task}] seed {self.seed}{cap}"
