"""A decoder trained on (released, original) pairs to turn released data back into images."""
import torch

from bench.models import Decoder
from bench.protocol import Attacker
from bench.training import fit_decoder


class Inversion(Attacker):
    name = "inversion"
    description = "decoder trained on (released, original) attacker pairs; scored by PSNR and SSIM on test"
    knowledge = "gray-box"
    predicts = "images"
    # Runs recorded before `budget` existed used every released pair (up to `max_pairs`).
    legacy_defaults = {"budget": 0}

    def __init__(self, width: int = 32, depth: int = 2, epochs: int = 3, max_pairs: int = 10000, lr: float = 2e-3,
                 budget: int = 0):
        self.width = width
        self.depth = depth
        self.epochs = epochs
        self.max_pairs = max_pairs
        self.lr = lr
        self.budget = budget  # released (image, original) pairs it may learn from (0: all); the base class subsets

    def check_params(self):
        if self.budget < 0:
            raise self.param_error("budget", "must be >= 0 (0: every released attacker image)")

    def _fit(self, released_train, targets, *, context, seed):
        # Full-resolution decoders are the costliest models here; `max_pairs` bounds the attacker's budget.
        pick = torch.randperm(len(released_train), generator=torch.Generator().manual_seed(seed))[:self.max_pairs]
        decoder = Decoder(context.released_shape, context.image_shape, width=self.width, depth=self.depth)
        self.decoder_ = fit_decoder(decoder, released_train[pick], targets[pick],
                                    val=(context.released_val, context.val_targets),
                                    config=context.train.with_(lr=self.lr, epochs=self.epochs), device=context.device,
                                    seed=seed)

    def _predict(self, rb):
        return self.decoder_(rb)
