"""A fresh classifier trained from scratch on released data (gray-box: the attacker
queries the defense to release its own labelled images)."""
from bench.models import build_classifier, is_image_like
from bench.protocol import Attacker
from bench.training import fit_classifier


class Adaptive(Attacker):
    name = "adaptive"
    description = "fresh model trained from scratch on released attacker data with designated-task labels"
    knowledge = "gray-box"
    # Runs recorded before `budget` existed used every released attacker image.
    legacy_defaults = {"budget": 0}

    def __init__(self, arch: str = "auto", budget: int = 0):
        self.arch = arch
        self.budget = budget  # released labelled images it may learn from (0: all); the base class subsets

    def check_params(self):
        if self.budget < 0:
            raise self.param_error("budget", "must be >= 0 (0: every released attacker image)")

    def _fit(self, released_train, targets, *, context, seed):
        arch = self.arch
        if arch == "auto":
            # On image-shaped releases the designated model's architecture; otherwise one that fits the shape.
            arch = context.target_arch if is_image_like(context.released_shape, context.image_shape) else "auto"
        model = build_classifier(arch, context.released_shape, context.num_classes)
        self.model_ = fit_classifier(model, released_train, targets, val=(context.released_val, context.val_targets),
                                     config=context.train, device=context.device, seed=seed,
                                     desc=f"{self.name} {arch}")

    def _predict(self, rb):
        return self.model_(rb)
