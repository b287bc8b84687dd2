"""Run an ablation: each cumulative step is an experiment (N seeds or K folds) in its own folder.

    runs/<name>-ablation/<time>-<id>/ablation.yaml       the resolved steps and base config
                                    /<i>-<step>/...      one experiment folder per step
                                    /ablation.json|.md   the table with the significance test
                                    /val_curves.png      validation curves of every step overlaid
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from cnnlab.ablation.config import AblationConfig, parse_ablation
from cnnlab.ablation.stats import compare
from cnnlab.config import ExperimentConfig, config_to_dict, load_experiment, parse_experiment
from cnnlab.errors import ConfigError, RunError
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir, read_json
from cnnlab.models import get_model_entry
from cnnlab.reference import LAB_ABLATION
from cnnlab.reporting.curves import plot_overlay
from cnnlab.reporting.tables import pct, pm, render_table
from cnnlab.training.experiment import (data_key, describe_splits, load_data, resume_group, run_in_group,
                                        unit_names)

Log = Callable[[str], None]


def step_configs(ablation: AblationConfig, base_overrides: dict[str, Any]) -> list[ExperimentConfig]:
    """Each step's full configuration: the previous step's plus this step's changes.

    `base_overrides` (command-line options: data, epochs, device, ...) apply to every step.
    """
    configs: list[ExperimentConfig] = []
    current = config_to_dict(load_experiment(ablation.base, overrides=base_overrides))
    for step in ablation.steps:
        try:
            cfg = parse_experiment(current, source=f"ablation step '{step.name}'",
                                   overrides={**step.set, **base_overrides,
                                              "name": f"{ablation.name}-{step.name}", "seeds": ablation.seeds})
        except ConfigError as exc:
            raise ConfigError(f"{exc} (in ablation '{ablation.name}')") from None
        get_model_entry(cfg.model)
        configs.append(cfg)
        current = config_to_dict(cfg)
    return configs


def step_dir(group: Path, index: int, name: str) -> Path:
    return group / f"{index}-{name}"


def run_ablation(ablation: AblationConfig, *, base_overrides: dict[str, Any] | None = None, out: str | None = None,
                 progress: bool = True, log: Log = print) -> Path:
    configs = step_configs(ablation, base_overrides or {})
    group = create_unique_dir(Path(out or configs[0].out) / f"{ablation.name}-ablation")
    record = {"name": ablation.name, "base": ablation.base, "seeds": ablation.seeds, "alpha": ablation.alpha,
              "steps": [{"name": s.name, "label": s.label, "set": s.set} for s in ablation.steps],
              "base_overrides": base_overrides or {}}
    atomic_write_text(group / "ablation.yaml", yaml.safe_dump(record, sort_keys=False))
    log(f"ablation folder: {group}")
    splits_cache: dict[str, Any] = {}
    for index, (step, cfg) in enumerate(zip(ablation.steps, configs)):
        key = data_key(cfg)
        if key not in splits_cache:
            splits_cache[key] = load_data(cfg, log)
            log(describe_splits(splits_cache[key]))
        log(f"\n=== step {index}: {step.label} ({cfg.model}) ===")
        folder = step_dir(group, index, step.name)
        folder.mkdir()
        new_group_in(cfg, folder)
        run_in_group(cfg, folder, splits_cache[key], progress=progress, log=log)
    summarize_ablation(group, log=log)
    return group


def new_group_in(cfg: ExperimentConfig, folder: Path) -> None:
    atomic_write_text(folder / "experiment.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _read_record(group: Path) -> AblationConfig:
    raw = yaml.safe_load((group / "ablation.yaml").read_text())
    return parse_ablation({k: raw[k] for k in ("name", "base", "seeds", "alpha", "steps")},
                          source=str(group / "ablation.yaml"))


def summarize_ablation(group: Path, *, log: Log = print) -> dict:
    ablation = _read_record(group)
    rows, previous = [], None
    for index, step in enumerate(ablation.steps):
        folder = step_dir(group, index, step.name)
        summary = read_json(folder / "summary.json")
        accs = [r["test_acc"] for r in summary["runs"]]
        losses = [r["test_loss"] for r in summary["runs"]]
        row = {"step": index, "name": step.name, "label": step.label, "model": summary["model"],
               "test_acc": accs, "test_loss": losses, "lab": LAB_ABLATION.get(step.name),
               "vs_previous": compare(previous, accs, alpha=ablation.alpha) if previous else None}
        rows.append(row)
        previous = accs
    result = {"name": ablation.name, "alpha": ablation.alpha, "steps": rows}
    atomic_write_json(group / "ablation.json", result)
    table_md, table_txt = (_ablation_table(rows, ablation.alpha, markdown=m) for m in (True, False))
    curves = {f"{r['step']} {r['label']}": [step_dir(group, r["step"], r["name"]) / u / "metrics.csv"
                                            for u in unit_names(load_experiment(
                                                step_dir(group, r["step"], r["name"]) / "experiment.yaml"))]
              for r in rows}
    plot_overlay(curves, group / "val_curves.png", metric="val_acc",
                 title=f"{ablation.name}: validation accuracy per step (mean, min-max band)")
    n = len(rows[0]["test_acc"])
    note = (f"Test accuracy over {n} run(s) per step. 'Beyond noise' asks whether the gain over the previous "
            f"step is larger than seed-to-seed noise: Welch's t-test p < {ablation.alpha} and the "
            f"{100 * (1 - ablation.alpha):.0f} % bootstrap interval of the gain excludes 0. "
            "Lab: the report's single run per step (BaseNet: its 3-run mean).")
    atomic_write_text(group / "ablation.md", f"# Ablation: {ablation.name}\n\n{table_md}\n\n{note}\n\n"
                      "![validation curves](val_curves.png)\n")
    log(f"\nAblation {ablation.name}\n{table_txt}\n\n{note}\nresults: {group}")
    return result


def _ablation_table(rows: list[dict], alpha: float, *, markdown: bool) -> str:
    header = ["step", "change", "model", "test accuracy", "test loss", "lab", "gain", "Welch p",
              f"{100 * (1 - alpha):.0f} % CI of gain", "beyond noise?"]
    body = []
    for r in rows:
        cmp = r["vs_previous"]
        body.append([
            str(r["step"]), r["label"], r["model"], pm(r["test_acc"], percent=True),
            pm(r["test_loss"], percent=False), pct(r["lab"][1]) if r["lab"] else "—",
            f"{100 * cmp['gain']:+.2f} pts" if cmp else "—",
            ("—" if cmp is None else "n/a" if cmp["p_value"] is None else f"{cmp['p_value']:.3g}"),
            f"[{100 * cmp['ci_low']:+.2f}, {100 * cmp['ci_high']:+.2f}]" if cmp else "—",
            cmp["verdict"] if cmp else "—"])
    return render_table(header, body, markdown=markdown)


def resume_ablation(group: Path, *, device: str | None = None, progress: bool = True, log: Log = print) -> Path:
    """Finish every unfinished step of an ablation folder, then rebuild its table."""
    raw = yaml.safe_load((group / "ablation.yaml").read_text())
    ablation = _read_record(group)
    configs = step_configs(ablation, raw.get("base_overrides") or {})
    for index, (step, cfg) in enumerate(zip(ablation.steps, configs)):
        folder = step_dir(group, index, step.name)
        if not (folder / "experiment.yaml").is_file():
            folder.mkdir(exist_ok=True)
            new_group_in(cfg, folder)
        resume_group(folder, device=device, progress=progress, log=log)
        if not (folder / "summary.json").is_file():
            raise RunError(f"{folder}: step '{step.name}' did not finish")
    summarize_ablation(group, log=log)
    return group

