"""cnnlab: train, fine-tune and compare image classifiers with honest numbers.

The public names below are imported on first use (PEP 562), so `import cnnlab` and the
command line's `--help` do not pay for importing torch.
"""
from __future__ import annotations

from cnnlab.lazy import lazy_exports
from cnnlab.version import __version__

_EXPORTS = {
    "CnnlabError": "cnnlab.errors",
    "ExperimentConfig": "cnnlab.config",
    "load_experiment": "cnnlab.config",
    "create_model": "cnnlab.models",
    "list_models": "cnnlab.models",
    "model_summary": "cnnlab.models",
    "run_experiment": "cnnlab.studies",
    "load_trained": "cnnlab.inference",
    "write_report": "cnnlab.studies.report",
    "Learner": "cnnlab.api",
    "Result": "cnnlab.api",
    "Callback": "cnnlab.training.callbacks",
    "CancelFit": "cnnlab.training.callbacks",
    "CancelPhase": "cnnlab.training.callbacks",
    "Runtime": "cnnlab.training.runtime",
}

__all__ = [*_EXPORTS, "__version__"]
__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
