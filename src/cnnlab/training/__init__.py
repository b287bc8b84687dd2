"""Training: the loop, optimizers, checkpoints, one run per seed, experiments over seeds."""
from cnnlab.training.experiment import resume, run_experiment, summarize
from cnnlab.training.run import build_model, train_seed

__all__ = ["build_model", "resume", "run_experiment", "summarize", "train_seed"]
