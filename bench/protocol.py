"""The plugin contract: `Defense` and `Attacker` base classes (DESIGN section 5).

The bases own the plumbing (device, eval mode, batching, no_grad, progress) so
a plugin file holds only its method: a defense implements `_fit` and
`_release` (and `_designated` when the designated model is its own), an
attacker implements `_fit` and `_predict`. As in scikit-learn, `__init__`
only stores hyperparameters (all with defaults; `bench list` reads them from
the signature) and learned state lives in attributes ending in `_`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from bench.errors import BenchError, ContractError
from bench.training import TrainConfig, predict


@dataclass(frozen=True)
class DataSpec:
    """Shapes and task of the data a plugin works on."""

    image_shape: tuple[int, int, int]
    num_classes: int
    task: str


@dataclass(frozen=True)
class FitData:
    """What a defense is fitted on: the owner's labelled images and `val` (never `test`)."""

    x: torch.Tensor          # owner images, float in [0, 1]
    y: torch.Tensor          # owner labels for the designated task
    x_val: torch.Tensor
    y_val: torch.Tensor
    spec: DataSpec
    device: torch.device
    train: TrainConfig


@dataclass(frozen=True)
class AttackContext:
    """What an attacker knows besides the released attacker split and its targets.

    The attacker owns clean images of its own (the `attacker` split), so it can
    train off-the-shelf clean models: `clean_model(arch)` returns one trained on
    clean attacker data for `task`, built once per (dataset, seed, task, arch)
    by the runner's artifact cache and shared by every defense and attacker.
    """

    task: str
    num_classes: int
    image_shape: tuple[int, int, int]
    released_shape: tuple[int, ...]
    released_val: torch.Tensor | None     # None for attackers that do not train on released data
    val_targets: torch.Tensor             # labels, or clean images for inversion
    target_arch: str
    device: torch.device
    train: TrainConfig
    clean_model: Callable[[str], nn.Module]

    @property
    def released_is_image(self) -> bool:
        return tuple(self.released_shape) == tuple(self.image_shape)


class ParamError(BenchError, ValueError):
    """A hyperparameter out of range: bad input at the command line, a ValueError to code that calls a plugin."""


class Plugin:
    name: ClassVar[str]
    description: ClassVar[str]
    batch_size: ClassVar[int] = 512
    # Hyperparameters added after results were recorded, with the value those older records had
    # implicitly (not necessarily today's default): `bench.params.recorded_params` fills them in.
    legacy_defaults: ClassVar[dict] = {}
    # How a hyperparameter reads in tables and plots: {"eps": 255} shows 0.0627... as `16/255`.
    param_scales: ClassVar[dict] = {}

    def check_params(self) -> None:
        """Raise `param_error` for a hyperparameter out of range; called by the registry when the plugin
        is created, so a bad `--set` fails before any work. The default accepts everything."""

    def param_error(self, param: str, requirement: str) -> "ParamError":
        return ParamError(f"--set {self.name}.{param}={getattr(self, param)!r}: {requirement}")

    def get_params(self) -> dict:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _modules(self) -> dict[str, nn.Module]:
        """Learned modules: attributes ending in `_` that are nn.Modules."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and isinstance(v, nn.Module)}

    def _batched(self, fn, x: torch.Tensor | tuple[torch.Tensor, ...], desc: str | None = None):
        for module in self._modules().values():
            module.eval()
        return predict(fn, x, device=self.device_, batch_size=self.batch_size, desc=desc)


class Defense(Plugin):
    releases: ClassVar[str] = "image"   # "image" or "features"
    # Release is expensive (e.g. per-image optimisation): runs release only a capped subset
    # of attacker/val/test (`Preset.max_costly_release`), and so do their identity twins.
    costly_release: ClassVar[bool] = False
    # A trivial transform (noise, blur, ...): the floor of the headline ranking at matched utility.
    baseline: ClassVar[bool] = False

    @property
    def needs_labels(self) -> bool:
        """True when `release` needs the designated-task label of every image (then `_release(xb, yb)`)."""
        return False

    def fit(self, data: FitData, target: nn.Module, *, seed: int) -> "Defense":
        self._attach(target, data.device, data.spec)
        torch.manual_seed(seed)  # the modules' initial weights, so that a seed fixes the whole fit
        self._build(data.spec)
        built = set(self._modules())
        self._fit(data, seed=seed)
        # A fitted defense is restored by `_build` then `load_state_dict`: a module `_fit` created would
        # have no module to load into. Said now, at the fit, rather than at the first restore.
        late = sorted(set(self._modules()) - built)
        if late:
            raise ContractError(self._module_outside_build(late[0], "_fit created it"))
        return self

    def restore(self, state: dict, target: nn.Module, spec: DataSpec, device: torch.device) -> "Defense":
        """Rebuild a fitted defense from `state_dict()` output (the artifact cache)."""
        self._attach(target, device, spec)
        self._build(spec)
        self.load_state_dict(state)
        return self

    def release(self, x: torch.Tensor, y: torch.Tensor | None = None, desc: str | None = None) -> torch.Tensor:
        """The only thing attackers ever see. `x`: float images in [0, 1]; `y`: their designated-task
        labels, used only by defenses that need them (`needs_labels`), ignored by the others."""
        if not self.needs_labels:
            out = self._batched(self._release, x, desc)
        else:
            if y is None:
                raise ValueError(f"defense {self.name} ({self!r}) needs the designated-task labels to release: "
                                 f"call release(x, y)")
            if len(y) != len(x):
                raise ValueError(f"release: {len(x)} images but {len(y)} labels")
            out = self._batched(self._release, (x, y), desc)
        where = f"defense {self.name} released"
        check_output(where, out, len(x), tuple(x.shape[1:]) if self.releases == "image" else None)
        if self.releases == "image":
            lo, hi = out.aminmax()
            if lo < 0 or hi > 1:
                raise ContractError(f"{where} images outside [0, 1] (min {lo.item():.4g}, max {hi.item():.4g}); "
                                    "an image release must stay a valid image")
        return out

    def designated(self, released: torch.Tensor) -> torch.Tensor:
        """Logits of the designated model on released data."""
        logits = self._batched(self._designated, released)
        check_output(f"the designated model of defense {self.name} gave", logits, len(released),
                     (self.spec_.num_classes,))
        return logits

    def state_dict(self) -> dict:
        state = {name: m.state_dict() for name, m in self._modules().items() if name != "target_"}
        state.update({k: v for k, v in vars(self).items() if k.endswith("_") and isinstance(v, torch.Tensor)})
        return state

    def load_state_dict(self, state: dict) -> None:
        modules = self._modules()
        for key, value in state.items():
            if key in modules:
                modules[key].load_state_dict(value)
            elif isinstance(value, torch.Tensor):
                setattr(self, key, value.to(self.device_))
            else:  # a module's weights, but `_build` made no module to load them into
                raise ContractError(self._module_outside_build(key, "the fitted state holds its weights"))

    def _module_outside_build(self, attr: str, how: str) -> str:
        return (f"defense {self.name!r} ({type(self).__module__}.{type(self).__qualname__}): module {attr} is not "
                f"created by _build ({how}), so a fitted defense cannot be restored from the cache; create every "
                f"module (attribute ending in _) in _build(self, spec), which runs before _fit and again on "
                f"restore, and only train it in _fit (docs/plugins.md)")

    # --- what a defense implements -------------------------------------------------
    def _build(self, spec: DataSpec) -> None:
        """Create (untrained) modules for these shapes; called before `_fit` and on restore."""

    def _fit(self, data: FitData, *, seed: int) -> None:
        """Learn the defense's state (attributes ending in `_`)."""

    def _release(self, xb: torch.Tensor) -> torch.Tensor:
        """Release one batch on the device; defenses with `needs_labels` take `(xb, yb)`."""
        raise NotImplementedError

    def _designated(self, rb: torch.Tensor) -> torch.Tensor:
        return self.target_(rb)

    def _attach(self, target: nn.Module, device: torch.device, spec: DataSpec) -> None:
        self.check_params()   # a defense made directly (not through the registry) is checked before a fit too
        self.device_ = device
        self.spec_ = spec
        # The designated model is frozen: no defense may change its weights.
        self.target_ = target.to(device).eval().requires_grad_(False)


class Attacker(Plugin):
    knowledge: ClassVar[str] = "gray-box"   # "black-box" | "gray-box" | "white-box"
    predicts: ClassVar[str] = "labels"       # "labels" (logits) or "images" (inversion)
    uses_private_task: ClassVar[bool] = False
    # False for attackers that learn nothing from released data (off-the-shelf models): the runner
    # then releases only the split they are scored on, which saves two thirds of a costly release.
    trains_on_release: ClassVar[bool] = True

    def fit(self, released_train: torch.Tensor | None, targets: torch.Tensor, *, context: AttackContext,
            seed: int) -> "Attacker":
        self.device_ = context.device
        # What `predict` must return per row: logits over the task's classes, or an image.
        self.output_shape_ = tuple(context.image_shape) if self.predicts == "images" else (context.num_classes,)
        if released_train is not None:
            released_train, targets = self._within_budget(released_train, targets, seed)
            self.images_used_ = len(released_train)
        torch.manual_seed(seed)  # the initial weights of whatever `_fit` builds
        self._fit(released_train, targets, context=context, seed=seed)
        return self

    def _within_budget(self, released_train, targets, seed: int):
        """At most `budget` released labelled images (an attacker's `budget` hyperparameter; 0 or none: all).

        A seeded subset that depends only on the seed and the budget, never on the defense: a
        defended run and its identity twin learn from the same images at every budget.
        """
        budget = getattr(self, "budget", 0)
        if not budget:
            return released_train, targets
        # Permuted even when the budget covers every image: the order the training loop sees is part of a
        # run's numbers, and finetune's records were made this way.
        pick = torch.randperm(len(released_train), generator=torch.Generator().manual_seed(seed))[:budget]
        return released_train[pick], targets[pick]

    def predict(self, released: torch.Tensor):
        """Logits (or images for inversion); a dict name -> tensor for an ensemble of models."""
        out = self._batched(self._predict, released)
        for name, value in (out.items() if isinstance(out, dict) else [("", out)]):
            check_output(f"attacker {self.name}{'.' + name if name else ''} predicted", value, len(released),
                         self.output_shape_)
        return out

    def _fit(self, released_train, targets, *, context: AttackContext, seed: int) -> None:
        raise NotImplementedError

    def _predict(self, rb: torch.Tensor):
        raise NotImplementedError


def check_output(where: str, out, rows: int, shape: tuple[int, ...] | None) -> None:
    """Raise ContractError unless `out` is a finite tensor of `rows` rows (each of `shape`, if given).

    The one guard between a plugin's output and a score: a wrong row count or shape would
    otherwise be broadcast or argmax-ed into a plausible number.
    """
    if not isinstance(out, torch.Tensor):
        raise ContractError(f"{where} a {type(out).__name__}, not a tensor")
    if out.dim() == 0 or len(out) != rows:
        raise ContractError(f"{where} {len(out) if out.dim() else 0} rows for {rows} inputs")
    if shape is not None and tuple(out.shape[1:]) != tuple(shape):
        raise ContractError(f"{where} rows of shape {tuple(out.shape[1:])}; expected {tuple(shape)}")
    if not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out.reshape(rows, -1))).any(1).sum())
        raise ContractError(f"{where} non-finite values (NaN or inf) in {bad} of {rows} rows")
