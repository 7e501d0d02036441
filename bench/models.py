"""Architectures by name: small CNNs for 28-64 px images, timm ResNet/MobileNet, and
shape-adaptive heads and decoders for released data that is not an image.

`build_classifier(arch, in_shape, num_classes)` is the only entry point plugins use,
so adding an architecture is one function and one line in `ARCHS`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.errors import unknown


class GridPool(nn.AdaptiveAvgPool2d):
    """Adaptive average pooling that passes a map already at its output size through untouched.

    The same function (an average over one element is that element, exactly), without the pooling
    kernels, whose backward in bf16 channels_last cost ~5 % of a training step on 28 px images.
    """

    def forward(self, x):
        size = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,) * 2
        if tuple(x.shape[-2:]) == size:
            return x
        return super().forward(x)


def small_cnn(in_shape, num_classes, width: int = 32) -> nn.Module:
    """Three conv blocks with BatchNorm: the default designated model (fast on CPU)."""
    c = in_shape[0]

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    return nn.Sequential(
        block(c, width), nn.MaxPool2d(2),
        block(width, 2 * width), nn.MaxPool2d(2),
        block(2 * width, 4 * width), nn.MaxPool2d(2),
        # A 3x3 grid keeps where things are, which global pooling would discard.
        GridPool(3), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(36 * width, num_classes),
    )


def resnet(in_shape, num_classes) -> nn.Module:
    """timm's ResNet with one BasicBlock per stage (ResNet-10 layout), narrow, with a small-image stem."""
    import timm.models.resnet as tr

    model = tr.ResNet(block=tr.BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256),
                      stem_width=32, num_classes=num_classes, in_chans=in_shape[0])
    # ImageNet's 7x7/2 stem + max-pool would shrink a 28 px image to 7 px before the first block;
    # one 3x3/2 conv halves it once, which keeps the cost near the small CNN's on CPU.
    model.conv1 = nn.Conv2d(in_shape[0], model.bn1.num_features, 3, stride=2, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def mobilenet(in_shape, num_classes) -> nn.Module:
    """timm's MobileNetV3-small (width 0.5) with a stride-1 stem for small images."""
    import timm

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=num_classes, in_chans=in_shape[0])
    stem = model.conv_stem
    model.conv_stem = nn.Conv2d(in_shape[0], stem.out_channels, 3, stride=1, padding=1, bias=False)
    return model


def feature_cnn(in_shape, num_classes, width: int = 64) -> nn.Module:
    """For released feature maps (C x h x w, any h, w): 1x1 + 3x3 convs, no fixed pooling."""
    c = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


def mlp(in_shape, num_classes, hidden: int = 256) -> nn.Module:
    n = int(torch.tensor(in_shape).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, num_classes))


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "cnn": small_cnn,
    "resnet": resnet,
    "mobilenet": mobilenet,
    "feature_cnn": feature_cnn,
    "mlp": mlp,
}
IMAGE_ARCHS = ("cnn", "resnet", "mobilenet")


def is_image_like(shape, image_shape) -> bool:
    """Released data an image model can take: same channels and at least 8 px."""
    return len(shape) == 3 and shape[0] == image_shape[0] and min(shape[1:]) >= 8


def build_classifier(arch: str, in_shape, num_classes: int) -> nn.Module:
    """`arch` by name; `auto` picks what fits the shape (image CNN, feature CNN or MLP)."""
    in_shape = tuple(in_shape)
    if arch == "auto":
        arch = "cnn" if len(in_shape) == 3 and min(in_shape[1:]) >= 8 else "feature_cnn" if len(in_shape) == 3 else "mlp"
    if arch not in ARCHS:
        raise unknown("architecture", arch, list(ARCHS) + ["auto"])
    return ARCHS[arch](in_shape, num_classes)


class Decoder(nn.Module):
    """Maps released data of any shape back to an image of `out_shape` in [0, 1].

    Vectors go through a linear layer to a coarse map; maps are resized to the
    image size and refined by a residual conv stack, which for an identity
    release learns close to the identity map.
    """

    def __init__(self, in_shape, out_shape, width: int = 48, depth: int = 4):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        c_out, h, w = self.out_shape
        if len(self.in_shape) == 3:
            self.stem = nn.Conv2d(self.in_shape[0], width, 3, padding=1)
        else:
            n = int(torch.tensor(self.in_shape).prod())
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(n, width * ((h + 3) // 4) * ((w + 3) // 4)),
                                      nn.Unflatten(1, (width, (h + 3) // 4, (w + 3) // 4)))
        self.body = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                          nn.Conv2d(width, width, 3, padding=1))
            for _ in range(depth)
        )
        self.head = nn.Conv2d(width, c_out, 3, padding=1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        z = self.stem(r)
        if z.shape[-2:] != self.out_shape[1:]:
            z = nn.functional.interpolate(z, size=self.out_shape[1:], mode="bilinear", align_corners=False)
        for block in self.body:
            z = z + block(z)
        return torch.sigmoid(self.head(z))
