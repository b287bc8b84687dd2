"""`--backbone torchvision/NAME`: any torchvision classification model, with its weights' transforms.

`torchvision.models.get_model(NAME)` builds the model and its last `nn.Linear` (the ImageNet
classifier) is replaced by an identity, so the model's own forward pools as its authors wrote it
(average pooling, a ViT's class token, ConvNeXt's norm, MobileNetV3's pre-logits layer). Weights
are `get_model_weights(NAME)`'s members (`--weights imagenet1k_v2`; `default` is torchvision's
DEFAULT), each with the resize, crop, interpolation and mean/std of its `transforms()`, downloaded
once into torch hub's cache. The stages are the model's main sequence of parameterised parts,
found by descending into the container that holds the model (ResNet's layer1-4, `features.N` of
MobileNet/EfficientNet/ConvNeXt, a ViT's `encoder.layers.encoder_layer_N`).
"""
from __future__ import annotations

import difflib

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.backbones import BackboneEntry, Preprocessing, WeightsEntry, _download_error, register_zoo
from cnnlab.models.trunks import ProbedTrunk, as_map


def _holds_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def main_sequence(module: nn.Module, prefix: str = "") -> list[str]:
    """The parameterised children of `module`; where there are fewer than three, the largest is a
    container of the real stages (`features`, `encoder`) and is read in their place."""
    children = [(f"{prefix}{name}", child) for name, child in module.named_children() if _holds_parameters(child)]
    if len(children) >= 3 or not children:
        return [name for name, _ in children]
    largest = max(children, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    names = []
    for name, child in children:
        inner = [c for _, c in child.named_children() if _holds_parameters(c)]
        names += main_sequence(child, f"{name}.") if child is largest[1] and len(inner) >= 2 else [name]
    return names


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"torchvision model {type(model).__name__} has no Linear classifier to replace")
    return linears[-1]


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


class TorchvisionTrunk(ProbedTrunk):
    """A torchvision model whose ImageNet classifier is an identity: its forward gives pooled features."""

    kind = "torchvision"

    def __init__(self, name: str, size: int, num_features: int):
        super().__init__(name, size)
        self._features = num_features

    def num_features(self, backbone: nn.Module) -> int:
        return self._features

    def stage_names(self, backbone: nn.Module) -> list[str]:
        return main_sequence(backbone)

    def pooled(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return backbone(x)

    def spatial(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map, kept by a hook while the model runs (its pooled tail is then unused)."""
        stage = self.last_map_stage(backbone)
        kept = []
        hook = backbone.get_submodule(stage).register_forward_hook(lambda _m, _i, out: kept.append(out))
        try:
            backbone(x)
        finally:
            hook.remove()
        return as_map(kept[-1], self.layout(backbone, stage))


def _preprocessing(weights) -> Preprocessing:
    preset = weights.transforms()
    crop = int(preset.crop_size[0])
    resize = int(preset.resize_size[0])
    return Preprocessing(size=crop, resize="crop", crop_ratio=crop / resize, mean=tuple(preset.mean),
                         std=tuple(preset.std), interpolation=preset.interpolation.value)


def _top1(weights) -> float | None:
    return weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")


def resolve(name: str) -> BackboneEntry:
    import torchvision.models as models

    known = models.list_models(module=models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=8, cutoff=0.6)
        raise ConfigError(f"backbone 'torchvision/{name}': not a torchvision classification model"
                          + (f"; close names: {', '.join(close)}" if close else "")
                          + " (`cnnlab list backbones PATTERN` lists them)")
    enum = models.get_model_weights(name)
    members = {member.name.lower(): member for member in enum}
    default = enum.DEFAULT.name.lower()
    probe = models.get_model(name, weights=None)
    classifier, linear = _last_linear(probe)

    def build() -> nn.Module:
        model = models.get_model(name, weights=None)
        _replace(model, classifier, nn.Identity())
        return model

    def adapt(trunk: nn.Module, state: dict) -> None:
        trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith(classifier + ".")}, strict=True)

    entry = None

    def weights_entry(key: str, member) -> WeightsEntry:
        top1 = _top1(member)
        return WeightsEntry(
            name=key, description=f"torchvision {enum.__name__}.{member.name}"
                                  + (f" ({top1} % ImageNet top-1)" if top1 else ""),
            preprocessing=_preprocessing(member), load_state_dict=lambda: _state(member),
            licence="BSD-3-Clause (torchvision)", url=member.url, top1=top1)

    def _state(member) -> dict:
        try:
            return member.get_state_dict(progress=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise _download_error(entry, weights[member.name.lower()], exc) from None

    weights = {key: weights_entry(key, member) for key, member in members.items()}
    entry = BackboneEntry(
        name=f"torchvision/{name}", build=build,
        trunk=TorchvisionTrunk(f"torchvision/{name}", weights[default].preprocessing.size, linear.in_features),
        weights=weights, default_weights=default, adapt_state_dict=adapt,
        description=f"torchvision's {name} ({len(weights)} weights: {', '.join(weights)})")
    return entry


def list_names(pattern: str = "") -> list[str]:
    import torchvision.models as models

    return [n for n in models.list_models(module=models) if pattern.lower().strip("*") in n]


register_zoo("torchvision", resolve)
