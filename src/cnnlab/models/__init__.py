"""Model registry, builders, initialisers and the Keras-style summary."""
from cnnlab.models import birdnet as _birdnet  # noqa: F401  (registers BirdNet V0-V4)
from cnnlab.models import convnet as _convnet  # noqa: F401  (registers the lab's CNNs)
from cnnlab.models import cifar_resnet as _cifar_resnet  # noqa: F401  (registers cifar_recipe)
from cnnlab.models.backbones import get_backbone, list_backbones
from cnnlab.models.base import Classifier
from cnnlab.models.init import initialise
from cnnlab.models.registry import (create_model, get_model_entry, list_models, model_preprocessing,
                                    register_model)
from cnnlab.models.summary import ModelSummary, model_summary

__all__ = ["Classifier", "ModelSummary", "create_model", "get_backbone", "get_model_entry", "initialise",
           "list_backbones", "list_models", "model_preprocessing", "model_summary", "register_model"]
