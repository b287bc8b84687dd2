"""The training engine: the loop, optimizers, fine-tuning phases, checkpoints, feature cache,
and one run (one seed) into its folder. Studies over many runs live in `cnnlab.studies`."""
from cnnlab.training.trainer import Trainer, build_model, train_seed

__all__ = ["Trainer", "build_model", "train_seed"]
