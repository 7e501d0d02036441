"""An off-the-shelf clean model fine-tuned on a labelled budget of released data (gray-box)."""

from bench.errors import NotApplicable
from bench.protocol import Attacker
from bench.training import fit_classifier


class Finetune(Attacker):
    name = "finetune"
    description = "clean model of the designated architecture fine-tuned on `budget` labelled released samples"
    knowledge = "gray-box"

    def __init__(self, budget: int = 2000, epochs: int = 3, lr: float = 1e-3):
        self.budget = budget
        self.epochs = epochs
        self.lr = lr

    def check_params(self):
        if self.budget < 1:
            raise self.param_error("budget", "must be >= 1")

    def _fit(self, released_train, targets, *, context, seed):
        if not context.released_is_image:
            raise NotApplicable(f"released data has shape {tuple(context.released_shape)}; a clean image model "
                                f"expects {tuple(context.image_shape)}")
        # `released_train` is already the seeded `budget` subset (Attacker.fit).
        model = context.clean_model(context.target_arch)
        config = context.train.with_(epochs=self.epochs, lr=self.lr)
        self.model_ = fit_classifier(model, released_train, targets,
                                     val=(context.released_val, context.val_targets), config=config,
                                     device=context.device, seed=seed, desc="finetune")

    def _predict(self, rb):
        return self.model_(rb)
