"""Training: the `Learner` (one run, one seed, built from a model, data, a runtime and callbacks), the
loop, optimizers, fine-tuning phases, checkpoints, the feature cache. Studies over many runs live in
`cnnlab.studies`. The names below are imported on first use, so a module that needs only
`training.callbacks` does not import torch."""
from cnnlab.lazy import lazy_exports

_EXPORTS = {
    "Callback": "cnnlab.training.callbacks", "CancelFit": "cnnlab.training.callbacks",
    "CancelPhase": "cnnlab.training.callbacks", "Learner": "cnnlab.training.learner",
    "build_model": "cnnlab.training.learner", "train_seed": "cnnlab.training.learner",
    "Runtime": "cnnlab.training.runtime",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
