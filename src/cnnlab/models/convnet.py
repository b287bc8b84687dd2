"""The lab's small CNNs as variants of one builder (timm's one-liner variants).

BaseNet and every BaseNet++ ablation step are the same `ConvNet` built from a spec:
conv blocks (conv → ReLU → optional BatchNorm → optional max-pool, the lab's order),
then hidden dense layers (dense → ReLU → optional Dropout), then the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnlab.models.base import KERAS_BN_EPS, KERAS_BN_MOMENTUM, Classifier
from cnnlab.models.registry import register_model


@dataclass(frozen=True)
class ConvBlock:
    out_channels: int
    kernel: int
    padding: str = "valid"  # "valid" or "same", as Keras names them
    pool: bool = False


class ConvNet(Classifier):
    """Conv blocks (the backbone) followed by a dense classifier (the head)."""

    def __init__(self, *, blocks: tuple[ConvBlock, ...], hidden: tuple[int, ...], num_classes: int,
                 in_channels: int = 3, image_size: int = 32, batchnorm: bool = False,
                 dropout: float = 0.0, bn_momentum: float = KERAS_BN_MOMENTUM, bn_eps: float = KERAS_BN_EPS):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for block in blocks:
            layers += [nn.Conv2d(channels, block.out_channels, block.kernel, padding=block.padding), nn.ReLU()]
            if batchnorm:
                layers.append(nn.BatchNorm2d(block.out_channels, momentum=bn_momentum, eps=bn_eps))
            if block.padding == "valid":
                size = size - block.kernel + 1
            if block.pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = block.out_channels
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for this network")
        layers.append(nn.Flatten())
        self.backbone = nn.Sequential(*layers)
        self.num_features = channels * size * size

        head: list[nn.Module] = []
        width = self.num_features
        for units in hidden:
            head += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            width = units
        head.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*head)
        self.num_classes = num_classes


_BASENET = dict(blocks=(ConvBlock(6, 5, pool=True), ConvBlock(16, 5, pool=True)), hidden=(50,))
_WIDE = dict(blocks=(ConvBlock(128, 3, "same"), ConvBlock(128, 3, pool=True), ConvBlock(64, 5, pool=True)),
             hidden=(256, 128, 64))


def _convnet(spec: dict, *, num_classes: int, in_channels: int, image_size: int, **kwargs) -> ConvNet:
    return ConvNet(**spec, **kwargs, num_classes=num_classes, in_channels=in_channels, image_size=image_size)


@register_model("basenet", input_size=(3, 32, 32))
def basenet(*, num_classes: int = 25, in_channels: int = 3, image_size: int = 32) -> ConvNet:
    return _convnet(_BASENET, num_classes=num_classes, in_channels=in_channels, image_size=image_size)


@register_model("basenet_wide", input_size=(3, 32, 32))
def basenet_wide(*, num_classes: int = 25, in_channels: int = 3, image_size: int = 32) -> ConvNet:
    return _convnet(_WIDE, num_classes=num_classes, in_channels=in_channels, image_size=image_size)


@register_model("basenet_wide_bn", input_size=(3, 32, 32))
def basenet_wide_bn(*, num_classes: int = 25, in_channels: int = 3, image_size: int = 32,
                    bn_momentum: float = KERAS_BN_MOMENTUM, bn_eps: float = KERAS_BN_EPS) -> ConvNet:
    return _convnet(_WIDE, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    batchnorm=True, bn_momentum=bn_momentum, bn_eps=bn_eps)


@register_model("basenet_pp", input_size=(3, 32, 32))
def basenet_pp(*, num_classes: int = 25, in_channels: int = 3, image_size: int = 32, dropout: float = 0.25,
               bn_momentum: float = KERAS_BN_MOMENTUM, bn_eps: float = KERAS_BN_EPS) -> ConvNet:
    return _convnet(_WIDE, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    batchnorm=True, dropout=dropout, bn_momentum=bn_momentum, bn_eps=bn_eps)
