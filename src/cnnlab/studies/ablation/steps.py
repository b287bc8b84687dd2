"""The lab's improvements as named configuration deltas, applied cumulatively.

A step is a name plus the configuration keys it changes, never a boolean flag on a
model builder: an ablation is then a list of step names, and a user can add a step of
their own in YAML (`{name: ..., set: {...}}`) without touching code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class Improvement:
    label: str
    changes: dict = field(default_factory=dict)


IMPROVEMENTS: dict[str, Improvement] = {
    "baseline": Improvement("BaseNet (baseline)"),
    # Keras ImageDataGenerator(featurewise_center, featurewise_std_normalization, rotation_range=10,
    # width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True, fill_mode='nearest').
    "augment": Improvement("+ normalisation & augmentation", {
        "preprocess.normalize": "featurewise", "preprocess.augment.rotation": 10.0,
        "preprocess.augment.shift": 0.2, "preprocess.augment.hflip": True, "preprocess.augment.fill": "nearest"}),
    "wide": Improvement("+ depth & width", {"model": "basenet_wide"}),
    "batchnorm": Improvement("+ BatchNorm", {"model": "basenet_wide_bn"}),
    "dropout": Improvement("+ Dropout 0.25", {"model": "basenet_pp", "model_args": {"dropout": 0.25}}),
}


def get_improvement(name: str) -> Improvement:
    try:
        return IMPROVEMENTS[name]
    except KeyError:
        raise ConfigError(f"unknown ablation step '{name}'; named steps: {', '.join(IMPROVEMENTS)} "
                          "(or give a mapping {name: ..., set: {key: value}})") from None
