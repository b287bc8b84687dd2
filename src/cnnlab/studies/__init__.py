"""Studies: what is built from many training runs — an experiment over seeds or folds, an
ablation of cumulative steps, a comparison, classic heads, resuming any of them, and the report.

This layer sits above the engine (`cnnlab.training`): it imports from it, never the reverse.
The names below are imported on first use, so `cnnlab report` (which needs no torch) stays quick.
"""
from __future__ import annotations

from cnnlab.lazy import lazy_exports

_EXPORTS = {
    "load_ablation": "cnnlab.studies.ablation", "resume_ablation": "cnnlab.studies.ablation",
    "run_ablation": "cnnlab.studies.ablation", "summarize_ablation": "cnnlab.studies.ablation",
    "run_compare": "cnnlab.studies.compare",
    "resume_experiment": "cnnlab.studies.experiment", "run_experiment": "cnnlab.studies.experiment",
    "summarize_experiment": "cnnlab.studies.experiment",
    "resume": "cnnlab.studies.resume",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
