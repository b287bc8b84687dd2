"""An experiment: N seeds of one configuration, each in its own run folder, then one table.

    runs/<experiment>/<time>-<id>/experiment.yaml   the resolved configuration
                                 /seed-<s>/...      one run folder per seed (see run.py)
                                 /results.csv       one row per seed
                                 /summary.json      per-run results, mean ± std, the lab's figures
                                 /summary.md        the table, ready for a report
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import yaml

from cnnlab.config import ExperimentConfig, config_to_dict, load_experiment
from cnnlab.data.sources import load_splits
from cnnlab.errors import RunError
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir, read_json
from cnnlab.reference import lab_reference
from cnnlab.reporting.tables import mean_std, seeds_table
from cnnlab.training.run import read_run_config, train_seed

Log = Callable[[str], None]


def seed_dir(group: Path, seed: int) -> Path:
    return group / f"seed-{seed}"


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True, log: Log = print) -> Path:
    """Train every seed of `cfg` into a new group folder and write the summary table."""
    splits = load_splits(cfg.data)
    log(f"data: {splits.description}: {len(splits.train)} train / "
        f"{len(splits.val) if splits.val is not None else 0} val / {len(splits.test)} test, "
        f"{splits.num_classes} classes")
    group = create_unique_dir(Path(cfg.out) / cfg.experiment_name)
    atomic_write_text(group / "experiment.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    log(f"run folder: {group}")
    for seed in cfg.seeds:
        folder = seed_dir(group, seed)
        folder.mkdir()
        train_seed(cfg, folder, splits, seed=seed, progress=progress, log=log)
    summarize(group, log=log)
    return group


def summarize(group: Path, *, log: Log = print) -> dict:
    """Build results.csv, summary.json and summary.md from the seeds' results.json files."""
    cfg = load_experiment(group / "experiment.yaml")
    results = [read_json(seed_dir(group, s) / "results.json") for s in cfg.seeds]
    lab = lab_reference(cfg.experiment_name)
    accs, losses = [r["test_acc"] for r in results], [r["test_loss"] for r in results]
    summary = {
        "experiment": cfg.experiment_name, "model": cfg.model, "seeds": cfg.seeds, "runs": results,
        "test_acc_mean": mean_std(accs)[0], "test_acc_std": mean_std(accs)[1],
        "test_loss_mean": mean_std(losses)[0], "test_loss_std": mean_std(losses)[1],
        "mean_epoch_time_s": mean_std([r["mean_epoch_time_s"] for r in results])[0],
        "lab": lab,
    }
    atomic_write_json(group / "summary.json", summary)
    buffer = io.StringIO()
    columns = ["seed", "test_loss", "test_acc", "final_val_acc", "best_val_acc", "mean_epoch_time_s", "wall_time_s"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    atomic_write_text(group / "results.csv", buffer.getvalue())
    title = f"{cfg.experiment_name}: test results over {len(results)} seed(s)"
    atomic_write_text(group / "summary.md", f"# {title}\n\n{seeds_table(results, lab, markdown=True)}\n"
                      + (f"\nLab figures: {lab['note']}.\n" if lab else ""))
    log(f"\n{title}\n{seeds_table(results, lab)}\n\nresults: {group}")
    return summary


def resume(path: Path, *, device: str | None = None, progress: bool = True, log: Log = print) -> Path:
    """Continue an interrupted seed folder, or every unfinished seed of a group folder."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: run folder does not exist")
    if (path / "config.yaml").is_file():
        group, seeds = (path.parent if (path.parent / "experiment.yaml").is_file() else None), None
        targets = [path]
    elif (path / "experiment.yaml").is_file():
        group = path
        seeds = load_experiment(path / "experiment.yaml").seeds
        targets = [seed_dir(path, s) for s in seeds]
    else:
        raise RunError(f"{path}: not a cnnlab run folder (no config.yaml or experiment.yaml)")
    splits_cache: dict = {}
    for folder in targets:
        if (folder / "results.json").is_file():
            log(f"{folder}: already finished")
            continue
        fresh = not (folder / "checkpoint.pt").is_file()
        if (folder / "config.yaml").is_file():
            cfg = read_run_config(folder)
            seed = cfg.seeds[0]
        else:  # this seed had not started: take the group's configuration
            cfg = load_experiment(group / "experiment.yaml")
            seed = int(folder.name.removeprefix("seed-"))
            folder.mkdir(exist_ok=True)
        if device:
            cfg.device = device
        key = repr(cfg.data)
        if key not in splits_cache:
            splits_cache[key] = load_splits(cfg.data)
        train_seed(cfg, folder, splits_cache[key], seed=seed, resume=not fresh, progress=progress, log=log)
    if group is not None and all((seed_dir(group, s) / "results.json").is_file()
                                 for s in load_experiment(group / "experiment.yaml").seeds):
        summarize(group, log=log)
    return path
