"""The interface every registered model implements, written down once.

timm's models all answer `forward_features`, `forward_head`, `get_classifier` and
`group_matcher`; cnnlab's answer the same questions through this base class, so the
trainer, fine-tuning policies, feature cache, initialisers and summary never probe a
model with `hasattr`. A model is two named parts, `backbone` and `head`:

    logits = head(forward_features(x))      forward_features = backbone (+ pooling)
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

# Keras BatchNormalization defaults: momentum 0.99 is PyTorch momentum 0.01.
KERAS_BN_MOMENTUM = 0.01
KERAS_BN_EPS = 1e-3


class Classifier(nn.Module):
    """Base class of registered models: a `backbone` and a `head`, each an `nn.Module`."""

    backbone: nn.Module
    head: nn.Module
    num_classes: int
    #: forward_features returns one flat vector per image (classic heads can use it)
    flat_features: bool = True

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; a softmax output layer (Keras's) lives in the loss."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The last layer: the one a new number of classes replaces."""
        return [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]

    def part_aliases(self) -> dict[str, str]:
        """Extra names a fine-tuning policy may use for parts (`backbone.14x14` → `backbone.layer3`)."""
        return {}

    def stage_names(self) -> list[str]:
        """The backbone's stages, first to last, as module paths a policy can name."""
        return [f"backbone.{name}" for name, _ in self.backbone.named_children()]

    def backbone_stage_parameters(self) -> list[tuple[str, list[nn.Parameter]]]:
        """The backbone's parameters stage by stage, first to last (layer-wise learning-rate decay)."""
        return [(name, list(child.parameters())) for name, child in self.backbone.named_children()
                if any(True for _ in child.parameters())]

    def gradcam_layer(self) -> str | None:
        """The module Grad-CAM explains by default (None: the backbone's last layer with a feature map)."""
        return None

    def init_targets(self) -> list[nn.Module]:
        """What an initialiser may re-draw; a model with pretrained parts leaves those out."""
        return [self]

    def summary_collapse(self) -> tuple[str, ...]:
        """Containers the summary shows as one row each (a pretrained backbone's stages)."""
        return ()

    def features_identity(self) -> str:
        """A digest of everything `forward_features` computes with: it keys the feature cache.

        The backbone's actual tensors are hashed, so a randomly initialised backbone of
        another seed, or other weights of the same name, can never reuse stale features.
        """
        digest = hashlib.sha256(type(self).__name__.encode())
        for module in self._feature_modules():
            digest.update(repr(module).encode())
            for name, tensor in module.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _feature_modules(self) -> list[nn.Module]:
        return [self.backbone]
