"""What cnnlab offers, by name, readable without importing torch (`cnnlab list` in a blink).

The registries (models/registry.py, models/backbones.py, data/sources.py) take their
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


@dataclass(frozen=True)
class BackboneFacts:
    weights: tuple[str, ...]  # names accepted by --weights (besides default, none and a PATH)
    default_weights: str
    stages: tuple[str, ...]  # named parts, first to last, that a fine-tuning policy can unfreeze from


BACKBONES = {
    "resnet50": BackboneFacts(weights=("imagenet1k_v1", "imagenet1k_v2"), default_weights="imagenet1k_v1",
                              stages=("stem", "layer1", "layer2", "layer3", "layer4")),
    **{f"efficientnet_lite{n}": BackboneFacts(weights=("imagenet",), default_weights="imagenet",
                                              stages=("stem", "stage1", "stage2", "stage3", "stage4", "stage5",
                                                      "stage6", "stage7", "head")) for n in (0, 1, 2)},
}

SOURCE_DESCRIPTIONS = {
    "auto": "detect the layout of --data PATH (default: cifar100)",
    "cifar100": "official CIFAR-100, downloaded through torchvision into the cache folder",
    "cifar100-folder": "a local folder holding the official cifar-100-python/ files",
    "npz": "train.npz + test.npz with images (uint8 N×H×W×3), labels, optional class_names",
    "imagefolder": "train/<class>/* and test/<class>/* image folders (any sizes and formats)",
    "classfolder": "<class>/* folders of your own photos, no split: train/val/test drawn for you",
    "csv": "a CSV file of path,label rows (paths relative to it), split like class folders",
    "cub-lab": "class folders NNN.Name/ beside train.txt and test.txt (the lab's birds)",
    "cub200-2010": "CUB-200 as distributed: images/ + lists/train.txt, lists/test.txt",
    "cub200-2011": "CUB-200-2011 as distributed: images.txt, image_class_labels.txt, train_test_split.txt, "
                   "classes.txt, images/",
}
