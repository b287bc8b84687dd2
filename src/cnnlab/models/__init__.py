"""Model registry, builders, initialisers and the Keras-style summary."""
from cnnlab.models import convnet as _convnet  # noqa: F401  (registers the lab's CNNs)
from cnnlab.models.init import initialise
from cnnlab.models.registry import create_model, get_model_entry, list_models, register_model
from cnnlab.models.summary import ModelSummary, model_summary

__all__ = ["create_model", "get_model_entry", "initialise", "list_models", "model_summary",
           "ModelSummary", "register_model"]
