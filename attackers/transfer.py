"""Off-the-shelf unauthorized classifiers applied to released data (black-box)."""
from torch import nn

from bench.errors import NotApplicable
from bench.models import IMAGE_ARCHS
from bench.protocol import Attacker


class Transfer(Attacker):
    name = "transfer"
    description = "clean classifiers of several architectures (incl. the designated one's) applied to released data"
    knowledge = "black-box"
    trains_on_release = False

    def __init__(self, archs: tuple = ("cnn", "resnet", "mobilenet")):
        self.archs = archs

    def check_params(self):
        unknown = [a for a in self.archs if a not in IMAGE_ARCHS]
        if not self.archs or unknown:
            raise self.param_error("archs", f"one or more of {', '.join(IMAGE_ARCHS)} joined by +")

    def _fit(self, released_train, targets, *, context, seed):
        if not context.released_is_image:
            raise NotApplicable(f"released data has shape {tuple(context.released_shape)}, not the image shape "
                                f"{tuple(context.image_shape)} that off-the-shelf classifiers take")
        # The designated model's own architecture is the hardest case (DESIGN section 3).
        archs = dict.fromkeys((*self.archs, context.target_arch))
        # Nothing is learnt from the released data: each model is trained on the attacker's clean images.
        self.models_ = nn.ModuleDict({arch: context.clean_model(arch) for arch in archs})

    def _predict(self, rb):
        return {arch: model(rb) for arch, model in self.models_.items()}
