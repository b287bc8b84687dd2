"""`cnnlab compare`: several experiments (and classic heads) over the same seeds, one table.

    runs/compare/<time>-<id>/<experiment>/<time>-<id>/...   one experiment folder each
                            /compare.json, compare.md        the table
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cnnlab.config import ExperimentConfig, load_experiment, model_spec
from cnnlab.errors import ConfigError
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir
from cnnlab.models import get_model_entry
from cnnlab.reporting.tables import compare_table
from cnnlab.studies.classic import run_classic_heads
from cnnlab.studies.experiment import data_key, load_data, new_experiment_dir, run_units
from cnnlab.studies.preflight import check_experiment
from cnnlab.training.learner import build_model

Log = Callable[[str], None]


def feature_experiment(configs: list[ExperimentConfig]) -> ExperimentConfig:
    """The experiment whose model provides the classic heads' features: the first pretrained one that pools."""
    for cfg in configs:
        entry = get_model_entry(cfg.model)
        if entry.preprocessing is not None and build_model(cfg, 2, entry.input_size).flat_features:
            return cfg
    raise ConfigError("--classic needs pooled backbone features: compare at least one experiment whose model "
                      "pools them (birdnet_v0, birdnet_v1, birdnet_v3, birdnet_v4, birdnet_recipe)")


def run_compare(experiments: list[str], *, overrides: dict[str, Any], classic: list[str], out: str | None = None,
                progress: bool = True, log: Log = print, origins: dict[str, str] | None = None) -> Path:
    configs = [load_experiment(name, overrides=overrides, origins=origins) for name in experiments]
    for cfg in configs:
        check_experiment(cfg)
    features_cfg = feature_experiment(configs) if classic else None
    keys = [data_key(cfg) for cfg in configs]  # taken before a run records its data into its config
    splits_by_key = {keys[0]: load_data(configs[0], log)}  # bad data fails before the folder
    folder = create_unique_dir(Path(out or configs[0].out) / "compare")
    log(f"comparison folder: {folder}")
    multilabel = splits_by_key[keys[0]].multilabel
    if multilabel and classic:
        raise ConfigError("--classic: the classic heads (scikit-learn) here predict one class an image; this data is "
                          "multi-label: compare networks only")
    rows = []
    for cfg, key in zip(configs, keys):
        if key not in splits_by_key:
            splits_by_key[key] = load_data(cfg, log)
        log(f"\n=== {cfg.experiment_name} ({cfg.model}) ===")
        experiment_dir = new_experiment_dir(cfg, splits_by_key[key], parent=folder / cfg.experiment_name, log=log)
        summary = run_units(cfg, experiment_dir, splits_by_key[key], progress=progress, log=log)
        runs = summary["runs"]
        # a multi-label experiment is compared on its test mAP (under test_acc's key, named by "figure")
        headline = "test_map" if multilabel else "test_acc"
        rows.append({"name": cfg.experiment_name, "kind": "network", "test_acc": [r[headline] for r in runs],
                     "figure": headline, "test_bal_acc": [r.get("test_bal_acc") for r in runs],
                     "test_macro_f1": [r.get("test_macro_f1") for r in runs],
                     "test_loss": [r["test_loss"] for r in runs], "wall_time_s": [r["wall_time_s"] for r in runs],
                     "lab": summary["lab"], "folder": str(experiment_dir)})
    if features_cfg is not None:
        log(f"\n=== classic heads on the features of {features_cfg.experiment_name} "
            f"({model_spec(features_cfg).backbone}) ===")
        results = run_classic_heads(features_cfg, splits_by_key[keys[configs.index(features_cfg)]], classic, log=log)
        for head in classic:
            mine = [r for r in results if r["head"] == head]
            rows.append({"name": f"classic: {mine[0]['label']}", "kind": "classic",
                         "test_acc": [r["test_acc"] for r in mine], "test_loss": None,
                         "test_bal_acc": [r.get("test_bal_acc") for r in mine],
                         "test_macro_f1": [r.get("test_macro_f1") for r in mine],
                         "wall_time_s": [r["fit_time_s"] for r in mine], "lab": None})
    atomic_write_json(folder / "compare.json", {"experiments": experiments, "overrides": overrides, "rows": rows})
    atomic_write_text(folder / "compare.md", f"# Comparison\n\n{compare_table(rows, markdown=True)}\n")
    log(f"\n{compare_table(rows)}\n\nresults: {folder}")
    return folder
