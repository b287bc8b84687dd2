"""The on-disk layout of everything cnnlab writes, in one place: file names, folder kinds, unit folders.

    runs/<experiment>/<stamp>/            an experiment   experiment.yaml, summary.json, results.csv, ...
                             /seed-<s>/   a run           config.yaml, metrics.csv, checkpoint.pt, model.safetensors,
                             /fold-<k>/                   results.json, status.json, curves.png, ...
    runs/ablation/<name>/<stamp>/         an ablation     ablation.yaml, ablation.json, <i>-<step>/ (experiments)
    runs/compare/<stamp>/                 a comparison    compare.json, <experiment>/ ...
    runs/probe/<stamp>/                   a backbone probe probe.json (the rows, the recommendation), probe.md
    runs/tune/<study>/                    a tuning study  study.json, trials/trial-NNNN/seed-<s>/ (runs), final.json
    runs/audit/<stamp>/                   a data audit    audit.json, label_issues.csv, duplicates.csv, outliers.csv

Studies, inference, the report and resume name files through these constants and tell folders apart
with `folder_kind`, so a renamed file or a new kind of folder is one edit here. Imports nothing (no torch).
"""
from __future__ import annotations

from pathlib import Path

# an experiment folder
EXPERIMENT_FILE = "experiment.yaml"  # the resolved configuration: what `cnnlab resume` reads back
SUMMARY_FILE = "summary.json"  # per-run results, mean ± std: marks a finished experiment
# a run (seed or fold) folder
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "model.safetensors"
RESULTS_FILE = "results.json"  # the test figures: marks a finished run
STATUS_FILE = "status.json"
CURVES_FILE = "curves.png"
LEAKS_FILE = "leaks.csv"  # an experiment's test images with a near-exact duplicate in train/val (data.leak_check)
TRUST_FILE = "trust.json"  # calibration, conformal coverage and the 'unknown' rule on the test split
RELIABILITY_FIGURE, RISK_COVERAGE_FIGURE = "reliability.png", "risk_coverage.png"
# the other studies
ABLATION_FILE, ABLATION_RESULTS = "ablation.yaml", "ablation.json"
COMPARE_RESULTS = "compare.json"
PROBE_RESULTS = "probe.json"  # a backbone probe (a comparison chosen on validation)
STUDY_FILE, STUDY_RESULTS = "study.json", "final.json"
AUDIT_RESULTS = "audit.json"  # `cnnlab audit`: the summary; label_issues.csv, duplicates.csv, outliers.csv beside

def seed_folder(seed: int) -> str:
    return f"seed-{seed}"


def fold_folder(fold: int) -> str:
    return f"fold-{fold}"


def is_unit_name(name: str) -> bool:
    """A run folder's name inside an experiment: seed-<s> or fold-<k>."""
    prefix, _, number = name.partition("-")
    return prefix in ("seed", "fold") and number.isdigit()


def unit_folders(experiment: Path) -> list[Path]:
    """The run folders of an experiment folder as they are on disk, seeds or folds in numeric order."""
    found = [p for p in Path(experiment).iterdir() if p.is_dir() and is_unit_name(p.name)]
    return sorted(found, key=lambda p: (p.name.partition("-")[0], int(p.name.partition("-")[2])))


def folder_kind(path: Path) -> str | None:
    """What a folder cnnlab wrote is (tune, ablation, experiment, probe, comparison or run), finished or not; None for anything else."""
    path = Path(path)
    if (path / STUDY_FILE).is_file():
        return "tune"
    if (path / ABLATION_FILE).is_file():
        return "ablation"
    if (path / EXPERIMENT_FILE).is_file():
        return "experiment"
    if (path / PROBE_RESULTS).is_file():
        return "probe"
    if (path / COMPARE_RESULTS).is_file():
        return "comparison"
    if (path / AUDIT_RESULTS).is_file():
        return "audit"
    if (path / CONFIG_FILE).is_file():  # metrics.csv comes with the first epoch
        return "run"
    return None
