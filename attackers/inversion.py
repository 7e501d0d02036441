"""A decoder trained on (released, original) pairs to turn released data back into images."""
from bench.models import Decoder
from bench.protocol import Attacker
from bench.training import fit_decoder


class Inversion(Attacker):
    name = "inversion"
    description = "decoder trained on (released, original) attacker pairs; scored by PSNR and SSIM on test"
    knowledge = "gray-box"
    predicts = "images"

    def __init__(self, width: int = 32, depth: int = 2, lr: float = 2e-3):
        self.width = width
        self.depth = depth
        self.lr = lr

    def _fit(self, released_train, targets, *, context, seed):
        decoder = Decoder(context.released_shape, context.image_shape, width=self.width, depth=self.depth)
        self.decoder_ = fit_decoder(decoder, released_train, targets, val=(context.released_val, context.val_targets),
                                    config=context.train.with_(lr=self.lr), device=context.device, seed=seed)

    def _predict(self, rb):
        return self.decoder_(rb)
