"""cnnlab: train, fine-tune and compare image classifiers with honest numbers."""
from cnnlab.config import ExperimentConfig, load_experiment
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, list_models, model_summary

__version__ = "0.1.0"

__all__ = [
    "CnnlabError",
    "ExperimentConfig",
    "create_model",
    "list_models",
    "load_experiment",
    "model_summary",
    "__version__",
]
