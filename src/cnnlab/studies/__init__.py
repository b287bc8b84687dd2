"""Studies: what is built from many training runs — an experiment over seeds or folds, an
ablation of cumulative steps, a comparison, classic heads, and resuming any of them.

This layer sits above the engine (`cnnlab.training`): it imports from it, never the reverse.
"""
from cnnlab.studies.ablation import load_ablation, resume_ablation, run_ablation, summarize_ablation
from cnnlab.studies.compare import run_compare
from cnnlab.studies.experiment import resume_experiment, run_experiment, summarize_experiment
from cnnlab.studies.resume import resume

__all__ = ["load_ablation", "resume", "resume_ablation", "resume_experiment", "run_ablation", "run_compare",
           "run_experiment", "summarize_ablation", "summarize_experiment"]
