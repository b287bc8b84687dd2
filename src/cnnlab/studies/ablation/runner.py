"""Run an ablation: each cumulative step is an experiment (N seeds or K folds) in its own folder.

    runs/<name>-ablation/<time>-<id>/ablation.yaml       the resolved steps and base config
                                    /<i>-<step>/...      one experiment folder per step
                                    /ablation.json|.md   the table with the significance test
                                    /val_curves.png      validation curves of every step overlaid
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


import cnnlab.layout as layout
from cnnlab.config import (ExperimentConfig, config_to_dict, load_experiment, parse_experiment, parse_yaml, save_config,
                           save_yaml)
from cnnlab.errors import ConfigError, RunError, RunInterrupted
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir
from cnnlab.reference import LAB_ABLATION, lab_data_kind_matches
from cnnlab.reporting.curves import plot_overlay
from cnnlab.reporting.tables import ablation_table, is_multilabel
from cnnlab.studies.ablation.config import AblationConfig, load_ablation, parse_ablation
from cnnlab.studies.ablation.stats import compare
from cnnlab.studies.experiment import (data_key, follows_lab_protocol, load_data, record_data, resume_experiment,
                                      run_units, unit_names)
from cnnlab.studies.layout import experiment_setup, read_summary, step_dir
from cnnlab.studies.preflight import check_experiment

Log = Callable[[str], None]


def step_configs(ablation: AblationConfig, base_overrides: dict[str, Any],
                 origins: dict[str, str] | None = None) -> list[ExperimentConfig]:
    """Each step's full configuration: the previous step's plus this step's changes.

    `base_overrides` (command-line options: data, epochs, device, ...) apply to every step;
    `origins` names the option that set each of them, for error messages.
    """
    configs: list[ExperimentConfig] = []
    current = config_to_dict(load_experiment(ablation.base, overrides=base_overrides, origins=origins))
    for step in ablation.steps:
        try:
            cfg = parse_experiment(current, source=f"ablation step '{step.name}'", origins=origins,
                                   overrides={**step.set, **base_overrides,
                                              "name": f"{ablation.name}-{step.name}", "seeds": ablation.seeds})
        except ConfigError as exc:
            raise ConfigError(f"{exc} (in ablation '{ablation.name}')") from None
        configs.append(cfg)
        current = config_to_dict(cfg)
    return configs


def run_ablation(ablation: AblationConfig, *, base_overrides: dict[str, Any] | None = None, out: str | None = None,
                 progress: bool = True, log: Log = print, origins: dict[str, str] | None = None) -> Path:
    configs = step_configs(ablation, base_overrides or {}, origins)
    for cfg in configs:
        check_experiment(cfg)
    splits_by_key: dict[str, Any] = {}
    splits_by_key[data_key(configs[0])] = load_data(configs[0], log)  # bad data fails before the folder
    folder = create_unique_dir(Path(out or configs[0].out) / f"{ablation.name}-ablation")
    record = {"name": ablation.name, "base": ablation.base, "seeds": ablation.seeds, "alpha": ablation.alpha,
              "steps": [{"name": s.name, "label": s.label, "set": s.set} for s in ablation.steps],
              "base_overrides": base_overrides or {}}
    save_yaml(record, folder / "ablation.yaml")
    log(f"ablation folder: {folder}")
    try:
        for index, (step, cfg) in enumerate(zip(ablation.steps, configs)):
            key = data_key(cfg)
            if key not in splits_by_key:
                splits_by_key[key] = load_data(cfg, log)
            log(f"\n=== step {index}/{len(configs) - 1}: {step.label} ({cfg.model}) ===")
            step_folder = step_dir(folder, index, step.name)
            step_folder.mkdir()
            record_data(cfg, step_folder, splits_by_key[key], log)
            save_config(cfg, step_folder / layout.EXPERIMENT_FILE)
            run_units(cfg, step_folder, splits_by_key[key], progress=progress, log=log)
    except RunInterrupted as exc:
        raise exc.resume_from(folder) from None
    summarize_ablation(folder, log=log)
    return folder


def _read_record(folder: Path) -> AblationConfig:
    raw = parse_yaml((folder / "ablation.yaml").read_text(encoding="utf-8"), str(folder / "ablation.yaml"))
    return parse_ablation({k: raw[k] for k in ("name", "base", "seeds", "alpha", "steps")},
                          source=str(folder / "ablation.yaml"))


def follows_lab_ablation(ablation: AblationConfig, folder: Path) -> bool:
    """Whether every step is the lab's own step (the built-in ablation, unchanged) on the lab's data."""
    lab = load_ablation("basenet_pp")
    if [s.name for s in ablation.steps] != [s.name for s in lab.steps]:
        return False
    for index, (step, reference) in enumerate(zip(ablation.steps, step_configs(lab, {}))):
        step_folder = step_dir(folder, index, step.name)
        runs = read_summary(step_folder / layout.SUMMARY_FILE)["runs"]
        if not follows_lab_protocol("basenet", load_experiment(step_folder / layout.EXPERIMENT_FILE), reference, runs):
            return False
    return True


def summarize_ablation(folder: Path, *, log: Log = print) -> dict:
    ablation = _read_record(folder)
    same_protocol = follows_lab_ablation(ablation, folder)
    first = step_dir(folder, 0, ablation.steps[0].name)
    first_cfg, first_runs = load_experiment(first / layout.EXPERIMENT_FILE), read_summary(first / layout.SUMMARY_FILE)["runs"]
    # the lab's figures stand beside the steps only where the data is the lab's (reference.LAB_SOURCES)
    lab_data = lab_data_kind_matches("basenet", source=first_cfg.data.source, num_classes=first_cfg.data.num_classes,
                                     train_images=first_runs[0]["num_train"] + first_runs[0]["num_val"],
                                     test_images=first_runs[0]["num_test"])
    rows, previous = [], None
    for index, step in enumerate(ablation.steps):
        summary = read_summary(step_dir(folder, index, step.name) / layout.SUMMARY_FILE)
        # a multi-label step is measured by its test mAP (under test_acc's key, named by "figure")
        lead = "test_map" if is_multilabel(summary["runs"]) else "test_acc"
        accs = [r[lead] for r in summary["runs"]]
        losses = [r["test_loss"] for r in summary["runs"]]
        row = {"step": index, "name": step.name, "label": step.label, "model": summary["model"],
               "test_acc": accs, "figure": lead, "test_loss": losses, "lab": LAB_ABLATION.get(step.name) if lab_data else None,
               "vs_previous": compare(previous, accs, alpha=ablation.alpha) if previous else None}
        rows.append(row)
        previous = accs
    result = {"name": ablation.name, "alpha": ablation.alpha, "lab_same_protocol": same_protocol, "steps": rows}
    atomic_write_json(folder / "ablation.json", result)
    table_md, table_txt = (ablation_table(rows, ablation.alpha, lab_same_protocol=same_protocol, markdown=m)
                           for m in (True, False))
    curves = {}
    for r in rows:
        step_folder = step_dir(folder, r["step"], r["name"])
        units = unit_names(load_experiment(step_folder / layout.EXPERIMENT_FILE))
        curves[f"{r['step']} {r['label']}"] = [step_folder / unit / "metrics.csv" for unit in units]
    setup = experiment_setup(step_dir(folder, 0, ablation.steps[0].name))
    mean_ap = rows[0]["figure"] == "test_map"
    plot_overlay(curves, folder / "val_curves.png", metric="val_map" if mean_ap else "val_acc",
                 title=f"{ablation.name}: validation {'mAP' if mean_ap else 'accuracy'} per step (mean, min-max band)"
                       f"\n{setup}")
    n = len(rows[0]["test_acc"])
    note = (f"Test accuracy over {n} run(s) per step. 'Beyond noise' asks whether the gain over the previous "
            f"step is larger than seed-to-seed noise: Welch's t-test p < {ablation.alpha} and the "
            f"{100 * (1 - ablation.alpha):.0f} % bootstrap interval of the gain excludes 0. "
            "Lab: the report's single run per step (BaseNet: its 3-run mean)"
            + ("." if same_protocol else ", with the lab's protocol (Keras, 50 epochs, all 12,500 training "
               "images of the official split), which this ablation does not follow.")
            + (" With fewer than 3 runs per step no verdict is given: two runs cannot estimate the "
               "seed-to-seed spread well enough for a test to mean anything." if n < 3 else ""))
    atomic_write_text(folder / "ablation.md", f"# Ablation: {ablation.name}\n\n{table_md}\n\n{note}\n\n"
                      "![validation curves](val_curves.png)\n")
    log(f"\nAblation {ablation.name}\n{table_txt}\n\n{note}\nresults: {folder}")
    return result


def resume_ablation(folder: Path, *, device: str | None = None, progress: bool = True, log: Log = print) -> Path:
    """Finish every unfinished step of an ablation folder, then rebuild its table."""
    raw = parse_yaml((folder / "ablation.yaml").read_text(encoding="utf-8"), str(folder / "ablation.yaml"))
    ablation = _read_record(folder)
    configs = step_configs(ablation, raw.get("base_overrides") or {})
    for index, (step, cfg) in enumerate(zip(ablation.steps, configs)):
        step_folder = step_dir(folder, index, step.name)
        if not (step_folder / layout.EXPERIMENT_FILE).is_file():
            step_folder.mkdir(exist_ok=True)
            save_config(cfg, step_folder / layout.EXPERIMENT_FILE)
        try:
            resume_experiment(step_folder, device=device, progress=progress, log=log)
        except RunInterrupted as exc:
            raise exc.resume_from(folder) from None
        if not (step_folder / layout.SUMMARY_FILE).is_file():
            raise RunError(f"{step_folder}: step '{step.name}' did not finish")
    summarize_ablation(folder, log=log)
    return folder
