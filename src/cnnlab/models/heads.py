"""Classifier heads from a spec: a list of layer strings, the output layer added last.

    dense:N        Linear to N units + ReLU        linear:N   Linear, no activation
    bn             BatchNorm (Keras momentum 0.99, eps 1e-3)
    dropout:P      Dropout with rate P             conv:C:K   Conv2d C channels, K×K, 'same' + ReLU
    flatten        flatten a feature map

The lab's heads are then data: BirdNetV1 is ["dense:768", "bn", "dropout:0.25", "dense:512", "dropout:0.25"].
"""
from __future__ import annotations

from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import KERAS_BN_EPS, KERAS_BN_MOMENTUM


def _number(text: str, kind: type, spec: str):
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"head layer '{spec}': '{text}' is not a {kind.__name__}") from None
    if value <= 0 or (kind is float and value >= 1):
        raise ConfigError(f"head layer '{spec}': value {text} out of range")
    return value


def build_head(spec: list[str], *, in_features: int, in_channels: int | None, spatial: int | None,
               num_classes: int) -> nn.Sequential:
    """`in_features` for pooled input; `in_channels`/`spatial` when the input is a feature map."""
    layers: list[nn.Module] = []
    is_map = in_channels is not None
    width = in_channels if is_map else in_features
    for item in spec:
        if not isinstance(item, str):
            raise ConfigError(f"head layer {item!r}: expected a string such as 'dense:512'")
        name, *args = item.split(":")
        if name in ("dense", "linear"):
            if is_map:
                raise ConfigError(f"head layer '{item}': add 'flatten' before dense layers on a feature map")
            units = _number(args[0] if args else "", int, item)
            layers.append(nn.Linear(width, units))
            if name == "dense":
                layers.append(nn.ReLU())
            width = units
        elif name == "conv":
            if not is_map or len(args) != 2:
                raise ConfigError(f"head layer '{item}': expected conv:CHANNELS:KERNEL on a feature map (pool: none)")
            channels, kernel = _number(args[0], int, item), _number(args[1], int, item)
            layers += [nn.Conv2d(width, channels, kernel, padding="same"), nn.ReLU()]
            width = channels
        elif name == "bn":
            layers.append((nn.BatchNorm2d if is_map else nn.BatchNorm1d)(width, momentum=KERAS_BN_MOMENTUM,
                                                                          eps=KERAS_BN_EPS))
        elif name == "dropout":
            layers.append(nn.Dropout(_number(args[0] if args else "", float, item)))
        elif name == "flatten":
            if not is_map:
                raise ConfigError(f"head layer '{item}': the input is already flat")
            layers.append(nn.Flatten())
            width, is_map = width * spatial * spatial, False
        else:
            raise ConfigError(f"head layer '{item}': unknown layer '{name}'; valid: dense, linear, bn, dropout, "
                              "conv, flatten")
    if is_map:
        raise ConfigError("head ends on a feature map: add 'flatten' (or use pool: avg)")
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
