"""A modern small CNN for 32×32 images, trained from scratch (beyond the lab).

Learned from airbench (Keller Jordan's CIFAR-10 speed runs) and ResNet-style CIFAR nets:
three stages, each a conv that widens, a max-pool that halves the size, BatchNorm and
GELU, then `depth` residual 3×3 conv units at that width; global max-pool and a linear
classifier. Max-pooling early keeps the multiply-adds low (about 90 M per image at the
default widths), which is what a 2-core CPU can afford for tens of epochs.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import Classifier
from cnnlab.models.registry import register_model


def conv_bn(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)]


class Residual(nn.Module):
    """x + GELU(BN(conv(x))): the unit keeps the width, so the skip needs no projection."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(channels, channels), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def stage(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    """Widen, halve the size (pooling before BatchNorm, as airbench does: 4× cheaper), then `depth` residual units."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.MaxPool2d(2),
                         nn.BatchNorm2d(out_channels), nn.GELU(), *(Residual(out_channels) for _ in range(depth)))


class Scale(nn.Module):
    """Multiply by a constant. Max-pooled features are large, so airbench scales the logits down
    (by 1/9) to keep the first steps of a high learning rate from blowing up."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class CifarResNet(Classifier):
    def __init__(self, *, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 256),
                 depth: int = 1, stem: int = 32, dropout: float = 0.0, logit_scale: float = 1 / 9):
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(in_channels, stem), nn.GELU()]
        channels = stem
        for width in widths:
            layers.append(stage(channels, width, depth))
            channels = width
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.backbone = nn.Sequential(*layers)
        self.num_features = channels
        head: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        self.head = nn.Sequential(*head, nn.Linear(channels, num_classes, bias=False), Scale(logit_scale))
        self.num_classes = num_classes


@register_model("cifar_recipe", input_size=(3, 32, 32))
def cifar_recipe(*, num_classes: int = 25, in_channels: int = 3, image_size: int = 32,
                 widths: list[int] | tuple[int, ...] = (64, 128, 256), depth: int = 1, stem: int = 32,
                 dropout: float = 0.0, logit_scale: float = 1 / 9) -> CifarResNet:
    if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ConfigError(f"model 'cifar_recipe': model_args.widths: expected a list of channel counts >= 1, "
                          f"got {widths!r}")
    if not (isinstance(stem, int) and stem >= 1) or not (isinstance(depth, int) and depth >= 0):
        raise ConfigError(f"model 'cifar_recipe': model_args.stem must be >= 1 and model_args.depth >= 0, "
                          f"got stem {stem!r}, depth {depth!r}")
    if image_size < 2 ** len(widths):
        raise ConfigError(f"model 'cifar_recipe': model_args.widths has {len(widths)} stages, each halving the "
                          f"image; {image_size}-pixel images allow at most {max(1, image_size.bit_length() - 1)}")
    return CifarResNet(num_classes=num_classes, in_channels=in_channels, widths=tuple(widths), depth=depth,
                       stem=stem, dropout=dropout, logit_scale=logit_scale)
