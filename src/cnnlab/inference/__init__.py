"""Using trained models: load them with their preprocessing, predict new images, export to ONNX.

This layer sits beside the training engine (it never imports it): a trained model is its
`model.safetensors` file, which records everything needed to use it.
"""
from cnnlab.inference.trained import TrainedModel, load_trained, trained_runs

__all__ = ["TrainedModel", "load_trained", "trained_runs"]
