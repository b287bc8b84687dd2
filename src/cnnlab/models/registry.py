"""Models are data: one registry maps a name to a builder (timm's `register_model`).

Every builder takes keyword-only arguments (`num_classes`, `in_channels`, ...) and
returns a `Classifier` (models/base.py) with two named parts, `backbone` and `head`, so
freezing, per-group learning rates and feature extraction work the same on every model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from cnnlab.catalogue import MODEL_DESCRIPTIONS
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.base import Classifier


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    input_size: tuple[int, int, int]  # (channels, height, width) the model is defined for
    # model_args → the Preprocessing its pretrained weights expect (None: not pretrained)
    preprocessing: Callable[[dict], Any] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, input_size: tuple[int, int, int], description: str | None = None,
                   preprocessing: Callable[[dict], Any] | None = None):
    """Decorator: `@register_model("basenet", ...)` over a builder function.

    cnnlab's own models take their description from catalogue.py (what `cnnlab list` reads
    without torch); a model registered elsewhere passes its own.
    """
    description = description or MODEL_DESCRIPTIONS.get(name)
    if description is None:
        raise ValueError(f"model '{name}': give register_model a description")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, description, input_size, preprocessing)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; valid models: {', '.join(list_models())}") from None


def model_preprocessing(name: str, model_args: dict):
    """The preprocessing a model's pretrained weights expect, or None for models trained from scratch."""
    entry = get_model_entry(name)
    return entry.preprocessing(model_args) if entry.preprocessing else None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown arguments are reported with the model's name."""
    entry = get_model_entry(name)
    try:
        model = entry.builder(**kwargs)
    except CnnlabError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        # model_args are free-form and reach the builder as they are: a width of 0, a dropout of 2 or an
        # argument it does not take fail inside torch; said here, with the arguments, before any run starts
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"model '{name}': model_args {sorted(kwargs)} do not build it ({detail})") from None
    if not isinstance(model, Classifier):
        raise TypeError(f"model '{name}': its builder returned a {type(model).__name__}; registered models "
                        "subclass cnnlab.models.base.Classifier (a backbone and a head)")
    return model
