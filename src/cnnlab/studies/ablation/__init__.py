"""Ablation studies: cumulative named steps, N seeds each, and a significance test per step."""
from cnnlab.studies.ablation.config import AblationConfig, load_ablation, parse_ablation
from cnnlab.studies.ablation.runner import resume_ablation, run_ablation, step_configs, summarize_ablation
from cnnlab.studies.ablation.stats import bootstrap_diff_ci, compare, welch_p_value

__all__ = ["AblationConfig", "bootstrap_diff_ci", "compare", "load_ablation", "parse_ablation", "resume_ablation",
           "run_ablation", "step_configs", "summarize_ablation", "welch_p_value"]
