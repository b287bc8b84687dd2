"""How a BirdNet reads any backbone: pooled features, a spatial map, stages with their strides.

A backbone (`BirdNet.backbone`) is whatever module its zoo builds — cnnlab's own trunks, a timm
model, a torchvision model — and a `Trunk` adapter (stateless; every method is handed the module)
answers the questions the rest of cnnlab asks of it, so that policies, heads, the feature cache,
Grad-CAM and layer-wise decay are written once:

    pooled(backbone, x)   (N, F) vectors: the model's own pooling (average, class token, + norm)
    spatial(backbone, x)  (N, C, h, w): the last feature map; a ViT's patch tokens as their grid
    stages                named parts in order, each with its output's reduction of the input side

Stage aliases follow from the reductions: `stride16` is the first stage after the first whose output
is 1/16 of the input (ResNet50's layer3, the lab's conv4_x, ConvNeXt's stages.2, a ViT's blocks.0),
and `14x14` (its side at 224 px) stays as the lab-era name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    name: str  # module path inside the backbone: "layer3", "stages.2", "blocks.8"
    reduction: int | None  # input side / output side; None once the output is no longer a map


def stage_aliases(stages: list[Stage], reference: int = 224) -> dict[str, str]:
    """`strideR` and `SxS` (S = reference / R) → the first stage after the first with that reduction."""
    aliases: dict[str, str] = {}
    for stage in stages[1:]:
        if stage.reduction and f"stride{stage.reduction}" not in aliases:
            aliases[f"stride{stage.reduction}"] = stage.name
            side = reference // stage.reduction
            aliases[f"{side}x{side}"] = stage.name
    return aliases


def as_map(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A stage's output as an NCHW map: `nchw`, `nhwc` (Swin), or `tokens:P` (P prefix tokens, then a
    square grid of patch tokens, a ViT's)."""
    if layout == "nchw":
        return x
    if layout == "nhwc":
        return x.permute(0, 3, 1, 2)
    if layout.startswith("tokens:"):
        prefix = int(layout.split(":")[1])
        patches = x[:, prefix:]
        side = math.isqrt(patches.shape[1])
        return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
    raise ConfigError(f"backbone output layout {layout!r} has no spatial map")


def guess_layout(x: torch.Tensor) -> str | None:
    """The layout of one probe output (a square input): None when it is not a map at all (a pooled
    vector, or a 1×1 map: ConvNeXt's head norm, MobileNetV3's conv head)."""
    if x.dim() == 4:
        if x.shape[1] == x.shape[2] and x.shape[3] != x.shape[1]:
            return "nhwc" if x.shape[1] > 1 else None
        return "nchw" if x.shape[-1] > 1 else None
    if x.dim() == 3 and x.shape[1] > 1:
        side = math.isqrt(x.shape[1])
        return f"tokens:{x.shape[1] - side * side}" if side > 1 else None
    return None


def map_side(x: torch.Tensor, layout: str | None) -> int | None:
    return None if layout is None else as_map(x, layout).shape[-1]


def probe_stages(backbone: nn.Module, names: list[str], size: int, run) -> tuple[list[Stage], dict[str, str]]:
    """Run the backbone once on a `size`² input, hooking `names`: each stage's reduction and layout."""
    modules = dict(backbone.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: outputs.setdefault(
        n, out[0] if isinstance(out, (tuple, list)) else out)) for n in names]
    was_training = backbone.training
    try:
        with torch.no_grad():
            run(backbone.eval(), torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
        backbone.train(was_training)
    stages, layouts = [], {}
    for name in names:
        out = outputs.get(name)
        layout = guess_layout(out) if isinstance(out, torch.Tensor) else None
        side = map_side(out, layout) if layout else None
        stages.append(Stage(name, size // side if side else None))
        if layout:
            layouts[name] = layout
    return stages, layouts


class Trunk:
    """cnnlab's own trunks: `backbone(x)` is the NCHW map of the last stage; stages are fixed by the catalogue."""

    kind = "cnn"

    def __init__(self, stages: list[Stage], num_features: int):
        self._stages, self._num_features = stages, num_features

    def stages(self, backbone: nn.Module) -> list[Stage]:
        return self._stages

    def num_features(self, backbone: nn.Module) -> int:
        return self._num_features

    def pooled(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(backbone(x), 1).flatten(1)

    def spatial(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return backbone(x)

    def map_channels(self, backbone: nn.Module) -> int:
        """Channels of `spatial`'s map."""
        return self._num_features

    def map_reduction(self, backbone: nn.Module) -> int:
        """The reduction of `spatial`'s map ('same' padding rounds its side up)."""
        return [s.reduction for s in self.stages(backbone) if s.reduction][-1]

    def stage_parameters(self, backbone: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
        """The parameters stage by stage, first to last (layer-wise decay): the backbone's children."""
        return [(name, list(child.parameters())) for name, child in backbone.named_children()
                if any(True for _ in child.parameters())]

    def gradcam_layer(self, backbone: nn.Module) -> str | None:
        """The module whose output Grad-CAM explains; None: the one that returns a map last (Grad-CAM's
        default), which is what the pooling reads."""
        return None


class ProbedTrunk(Trunk):
    """A zoo's model: stages found from the model itself and measured by one probe forward.

    Subclasses say which modules are the stages (`stage_names`) and how the model pools; the probe
    (cached per backbone name) gives each stage's reduction and output layout.
    """

    def __init__(self, name: str, size: int):
        super().__init__([], 0)
        self.name, self.size = name, size
        self._probed: tuple[list[Stage], dict[str, str]] | None = None
        self._map: tuple[int, int] | None = None

    def stage_names(self, backbone: nn.Module) -> list[str]:
        raise NotImplementedError

    def _probe(self, backbone: nn.Module) -> tuple[list[Stage], dict[str, str]]:
        if self._probed is None:
            self._probed = probe_stages(backbone, self.stage_names(backbone), self.size, self.pooled)
        return self._probed

    def stages(self, backbone: nn.Module) -> list[Stage]:
        return self._probe(backbone)[0]

    def layout(self, backbone: nn.Module, stage: str) -> str:
        layouts = self._probe(backbone)[1]
        if stage not in layouts:
            raise ConfigError(f"backbone '{self.name}': stage '{stage}' gives no spatial map")
        return layouts[stage]

    def last_map_stage(self, backbone: nn.Module) -> str:
        mapped = [s.name for s in self.stages(backbone) if s.reduction]
        if not mapped:
            raise ConfigError(f"backbone '{self.name}' gives no spatial map (a head with conv layers or pool: "
                              "none needs one); use pooled features (pool: avg)")
        return mapped[-1]

    def _map_shape(self, backbone: nn.Module) -> tuple[int, int]:
        """(channels, side) of `spatial`'s map at the native size, from one forward (cached)."""
        if self._map is None:
            was_training = backbone.training
            with torch.no_grad():
                shape = self.spatial(backbone.eval(), torch.zeros(1, 3, self.size, self.size)).shape
            backbone.train(was_training)
            self._map = (shape[1], shape[-1])
        return self._map

    def map_channels(self, backbone: nn.Module) -> int:
        return self._map_shape(backbone)[0]

    def map_reduction(self, backbone: nn.Module) -> int:
        return self.size // self._map_shape(backbone)[1]

    def stage_parameters(self, backbone: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
        """Each stage's parameters; those before the first stage (a ViT's class token and position
        embedding) join the first, those after the last (a final norm) join the last."""
        names = [s.name for s in self.stages(backbone)]
        groups: list[tuple[str, list[nn.Parameter]]] = [(n, []) for n in names]
        index = 0
        for pname, param in backbone.named_parameters():
            owner = next((i for i, n in enumerate(names) if pname.startswith(n + ".")), None)
            if owner is not None:
                index = owner
            groups[index][1].append(param)
        return [(n, params) for n, params in groups if params]

    def gradcam_layer(self, backbone: nn.Module) -> str | None:
        last = self.last_map_stage(backbone)
        if not self.layout(backbone, last).startswith("tokens"):
            return None
        # A ViT's class score reaches the patch tokens of its last block only through attention
        # inside that block (its final norm works token by token): explain the input norm of the
        # last block, whose tokens all still matter.
        modules = dict(backbone.named_modules())
        blocks = [s.name for s in self.stages(backbone) if s.reduction and any(True for _ in modules[s.name].children())]
        if not blocks:
            return last
        first = next(iter(modules[blocks[-1]].named_children()))[0]
        return f"{blocks[-1]}.{first}"
