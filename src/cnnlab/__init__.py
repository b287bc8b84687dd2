"""cnnlab: train, fine-tune and compare image classifiers with honest numbers.

The public names below are imported on first use (PEP 562), so `import cnnlab` and the
command line's `--help` do not pay for importing torch.
"""
from __future__ import annotations

import os

from cnnlab.lazy import lazy_exports
from cnnlab.version import __version__

# PyTorch's OpenMP threads (libgomp on Linux) spin for a long while when they wait for work, so
# two jobs sharing the cores burn them spinning: two BaseNet runs on 2 cores each went 4-28×
# slower. A short spin (1,000 rounds, then sleep) keeps a lone run within about 5 % of full
# spinning and two at once at 2.3× (sleeping at once, OMP_WAIT_POLICY=PASSIVE: 1.9×, but 14 %
# slower alone); README "Seeds together, and threads". Read by the OpenMP runtime when torch
# loads, so set before; a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

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
