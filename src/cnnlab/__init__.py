"""cnnlab: train, fine-tune and compare image classifiers with honest numbers.

The public names below are imported on first use (PEP 562), so `import cnnlab` and the
command line's `--help` do not pay for importing torch.
"""
from __future__ import annotations

import os

from cnnlab.lazy import lazy_exports
from cnnlab.version import __version__

# PyTorch's OpenMP threads spin while they wait for work: alone that buys nothing measurable, but
# two jobs sharing the cores then burn them spinning (two BaseNet runs on 2 cores: each 4-28×
# slower; with passive waiting 1.9×, and no loss alone: benchmarks/seeds_together.py). Read by
# the OpenMP runtime when torch loads, so it is set before; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
