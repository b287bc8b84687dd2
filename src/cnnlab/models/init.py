"""Weight initialisation schemes, by name."""
from __future__ import annotations

from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import Classifier


def keras_init_(model: Classifier) -> Classifier:
    """Keras defaults: Glorot-uniform kernels and zero biases for Conv2D and Dense.

    PyTorch's fan computation for conv kernels (k*k*in, k*k*out) matches Keras's, so
    `xavier_uniform_` draws from the same range. BatchNorm keeps gamma=1, beta=0 as in both.
    """
    for module in (m for part in model.init_targets() for m in part.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


INITIALISERS = {"keras": keras_init_, "torch": lambda model: model}


def initialise(model: Classifier, scheme: str) -> Classifier:
    try:
        return INITIALISERS[scheme](model)
    except KeyError:
        raise ConfigError(f"unknown init '{scheme}'; valid: {', '.join(INITIALISERS)}") from None
