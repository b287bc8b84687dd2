"""EfficientNet-Lite0/1/2 (Tan & Le 2019; the "Lite" variants: ReLU6, no squeeze-excitation,
stem and head not scaled), written as named stages so fine-tuning policies can address them.

Lite1 and Lite2 are Lite0 scaled in width and depth (`LITE_SCALING`, from TensorFlow's
efficientnet_lite_builder.py): channels multiplied and rounded to multiples of 8, the repeats
of every stage but the first and last multiplied and rounded up. Their stages keep Lite0's
names and strides, so a policy that names `stage4` means the same place in all three.

Convolutions pad like TensorFlow's 'SAME' (more on the bottom/right when the total is odd),
which the ported ImageNet weights were trained with; `load_reference_state_dict` maps the
layout of the `efficientnet-lite-pytorch` package onto this module.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand, in, out) for each stage, from efficientnet_lite_builder.py
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_MOMENTUM, BN_EPS = 0.01, 1e-3  # TF's 0.99 momentum
# variant: (width multiplier, depth multiplier, native resolution)
LITE_SCALING = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260)}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TF's round_filters: scale, round to the nearest multiple of 8, never more than 10 % down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def scaled_stages(width: float, depth: float) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """LITE0_STAGES scaled; the first stage's input stays the stem's 32 channels."""
    stages = []
    last = len(LITE0_STAGES) - 1
    for number, (repeats, kernel, stride, expand, cin, cout) in enumerate(LITE0_STAGES):
        if 0 < number < last:  # Lite keeps the first and last stages' repeats ("fix_head_stem")
            repeats = math.ceil(depth * repeats)
        cin = cin if number == 0 else round_channels(cin, width)
        stages.append((repeats, kernel, stride, expand, cin, round_channels(cout, width)))
    return tuple(stages)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False),
              nn.BatchNorm2d(cout, momentum=BN_MOMENTUM, eps=BN_EPS)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand → depthwise k×k → 1×1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0):
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn(cin, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, 1, act=False)
        self.skip = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.skip:
            return out
        if self.training and self.drop_path > 0:  # stochastic depth, per sample
            keep = 1 - self.drop_path
            mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) < keep
            out = out * mask / keep
        return out + x


class EfficientNetLite(nn.Module):
    """The convolutional trunk: stem, stage1..stage7, head conv. Output: (N, 1280, H/32, W/32)."""

    num_features = 1280

    def __init__(self, variant: str = "lite0", *, drop_path: float = 0.2):
        super().__init__()
        width, depth, _ = LITE_SCALING[variant]
        self.stages = scaled_stages(width, depth)
        self.stem = _conv_bn(3, 32, 3, stride=2)
        total = sum(r for r, *_ in self.stages)
        index = 0
        for number, (repeats, kernel, stride, expand, cin, cout) in enumerate(self.stages, start=1):
            blocks = []
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand,
                                     drop_path * index / total))
                index += 1
            self.add_module(f"stage{number}", nn.Sequential(*blocks))
        self.head = _conv_bn(self.stages[-1][-1], 1280, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


def load_reference_state_dict(model: EfficientNetLite, reference: dict[str, torch.Tensor]) -> None:
    """Load a state dict in the `efficientnet-lite-pytorch` layout (`_blocks.N._depthwise_conv...`)."""
    block_names: list[str] = []
    for number, (repeats, *_rest) in enumerate(model.stages, start=1):
        block_names += [f"stage{number}.{i}" for i in range(repeats)]
    renames = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
               "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
    top = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1"}
    mapped = {}
    for key, value in reference.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if block:
            index, layer, param = block.groups()
            mapped[f"{block_names[int(index)]}.{renames[layer]}.{param}"] = value
        elif key.split(".")[0] in top:
            layer, param = key.split(".", 1)
            mapped[f"{top[layer]}.{param}"] = value
        # _fc.* (the ImageNet classifier) is not part of the trunk
    model.load_state_dict(mapped, strict=True)
