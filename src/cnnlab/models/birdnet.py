"""BirdNet: a pretrained backbone plus a head, the lab's V0–V4 and cnnlab's recipe as variants.

Variants differ only by head spec and pooling here; how they train (frozen backbone,
full fine-tuning, warm-up then partial unfreezing) is the experiment's fine-tuning policy
(`train.phases`), see src/cnnlab/experiments/birdnet_*.yaml. The backbone is any registered
one — cnnlab's own, or a timm / torchvision model — read through its `Trunk` (models/trunks.py):
pooled features for dense heads, the spatial map (a ViT's token grid) for `pool: none`.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from cnnlab.catalogue import DEFAULT_BACKBONE
from cnnlab.config import ModelSpec
from cnnlab.errors import ConfigError
from cnnlab.models.backbones import create_backbone, get_backbone, preprocessing_for
from cnnlab.models.base import Classifier
from cnnlab.models.heads import build_head
from cnnlab.models.registry import register_model
from cnnlab.models.trunks import stage_aliases


class BirdNet(Classifier):
    def __init__(self, *, num_classes: int, backbone: str = DEFAULT_BACKBONE, weights: str = "default",
                 head: list[str] | tuple[str, ...] = (), pool: str = "avg", image_size: int = 224,
                 in_channels: int = 3):
        super().__init__()
        if pool not in ("avg", "none"):
            raise ConfigError(f"pool '{pool}': expected avg or none")
        self.backbone, entry = create_backbone(backbone, weights)
        self.backbone_name, self.weights_name, self.pool_mode = backbone, weights, pool
        self.preprocessing = preprocessing_for(entry, weights)
        self._trunk = entry.trunk
        if pool == "none":
            # The map's side: the trunk's reduction, rounded up as 'same' padding does.
            spatial = -(-image_size // self._trunk.map_reduction(self.backbone))
            channels = self._trunk.map_channels(self.backbone)
            self.head = build_head(list(head), in_features=channels, in_channels=channels, spatial=spatial,
                                   num_classes=num_classes)
        else:
            self.head = build_head(list(head), in_features=self._trunk.num_features(self.backbone),
                                   in_channels=None, spatial=None, num_classes=num_classes)
        self.num_classes = num_classes
        self.flat_features = pool != "none"

    def part_aliases(self) -> dict[str, str]:
        aliases = stage_aliases(self._trunk.stages(self.backbone))
        return {f"backbone.{k}": f"backbone.{v}" for k, v in aliases.items()}

    def stage_names(self) -> list[str]:
        return [f"backbone.{s.name}" for s in self._trunk.stages(self.backbone)]

    def backbone_stage_parameters(self) -> list[tuple[str, list[nn.Parameter]]]:
        return self._trunk.stage_parameters(self.backbone)

    def gradcam_layer(self) -> str | None:
        layer = self._trunk.gradcam_layer(self.backbone)
        return f"backbone.{layer}" if layer else None

    def init_targets(self) -> list[nn.Module]:
        """Initialisers re-draw the head, and the backbone only when it has no pretrained weights."""
        return [self.head] if self.weights_name != "none" else [self.backbone, self.head]

    def summary_collapse(self) -> tuple[str, ...]:
        # Each backbone stage is one row, a readable stand-in for Keras's 175.
        return tuple(self.stage_names())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_mode == "none":
            return self._trunk.spatial(self.backbone, x)
        return self._trunk.pooled(self.backbone, x)

    def features_identity(self) -> str:
        # pooled vectors and spatial maps of one backbone are different features
        return hashlib.sha256(f"{super().features_identity()}:{self.pool_mode}".encode()).hexdigest()


V1_HEAD = ("dense:768", "bn", "dropout:0.25", "dense:512", "dropout:0.25")
V2_HEAD = ("conv:64:3", "bn", "flatten", "dense:256")
V4_HEAD = ("dense:1024", "dropout:0.5", "dense:512")


def birdnet_preprocessing(model_args: dict):
    spec = ModelSpec.of("birdnet_v0", model_args)
    return preprocessing_for(get_backbone(spec.backbone), spec.weights)


def _variant(name: str, **spec):
    def builder(*, num_classes: int = 200, backbone: str = DEFAULT_BACKBONE, weights: str = "default",
                in_channels: int = 3, image_size: int = 224, **overrides) -> BirdNet:
        return BirdNet(num_classes=num_classes, backbone=backbone, weights=weights, image_size=image_size,
                       **{**spec, **overrides})

    builder.__name__ = name
    register_model(name, input_size=(3, 224, 224),
                   preprocessing=birdnet_preprocessing)(builder)


_variant("birdnet_v0", head=(), pool="avg")
_variant("birdnet_v1", head=V1_HEAD,
         pool="avg")
_variant("birdnet_v2", head=V2_HEAD,
         pool="none")
_variant("birdnet_v3", head=(), pool="avg")
_variant("birdnet_v4", head=V4_HEAD, pool="avg")

__all__ = ["BirdNet", "birdnet_preprocessing"]
