"""cnnlab: train, fine-tune and compare image classifiers with honest numbers.

The public names below are imported on first use (PEP 562), so `import cnnlab` and the
command line's `--help` do not pay for importing torch.
"""
from __future__ import annotations

import importlib

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
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnlab' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
