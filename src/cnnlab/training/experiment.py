"""An experiment: N seeds (or K folds) of one configuration, each in its own run folder.

    runs/<experiment>/<time>-<id>/experiment.yaml   the resolved configuration
                                 /seed-<s>/...      one run folder per seed (see run.py)
                                 /fold-<k>/...      ... or per fold with data.folds = K
                                 /results.csv       one row per run
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
from cnnlab.data.images import DataSplits
from cnnlab.data.sources import load_splits
from cnnlab.models import model_preprocessing
from cnnlab.data.split import kfold_splits
from cnnlab.errors import RunError
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir, read_json
from cnnlab.reference import lab_reference
from cnnlab.reporting.tables import folds_table, mean_std, seeds_table
from cnnlab.training import distributed
from cnnlab.training.run import train_seed

Log = Callable[[str], None]


def unit_names(cfg: ExperimentConfig) -> list[str]:
    """The run folders of an experiment: one per seed, or one per fold (first seed)."""
    if cfg.data.folds:
        return [f"fold-{k}" for k in range(1, cfg.data.folds + 1)]
    return [f"seed-{s}" for s in cfg.seeds]


def unit_seed(cfg: ExperimentConfig, unit: str) -> int:
    return cfg.seeds[0] if unit.startswith("fold-") else int(unit.removeprefix("seed-"))


def unit_data(cfg: ExperimentConfig, base: DataSplits, unit: str) -> DataSplits:
    """The splits of one unit: the shared hold-out, or fold k of the training set."""
    if not unit.startswith("fold-"):
        return base
    k = int(unit.removeprefix("fold-"))
    fit, held = kfold_splits(base.train, cfg.data.folds, cfg.data.split_seed)[k - 1]
    return DataSplits(train=fit, val=held, test=base.test, class_names=base.class_names,
                      description=f"{base.description}, fold {k}/{cfg.data.folds}")


def load_data(cfg: ExperimentConfig, log: Log = print) -> DataSplits:
    """The experiment's data, sized and resized as its model's pretrained weights expect."""
    return load_splits(cfg.data, model_preprocessing(cfg.model, cfg.model_args), log=log)


def data_key(cfg: ExperimentConfig) -> str:
    """Experiments with equal keys read the same splits, so one load can serve them all."""
    return repr((cfg.data, cfg.model_args.get("backbone"), cfg.model_args.get("weights")))


def new_group(cfg: ExperimentConfig, parent: Path | None = None) -> Path:
    """A new experiment folder; under torchrun process 0 makes it and the others learn its name."""
    group = None
    if distributed.current().is_main:
        group = create_unique_dir(Path(parent) if parent else Path(cfg.out) / cfg.experiment_name)
        atomic_write_text(group / "experiment.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return Path(distributed.broadcast(str(group) if group else None))


def run_in_group(cfg: ExperimentConfig, group: Path, splits: DataSplits, *, progress: bool = True,
                 log: Log = print) -> dict:
    """Train every unit of `cfg` inside an existing group folder, then summarise it."""
    main = distributed.current().is_main
    for unit in unit_names(cfg):
        folder = group / unit
        if main:
            folder.mkdir()
        train_seed(cfg, folder, unit_data(cfg, splits, unit), seed=unit_seed(cfg, unit), progress=progress, log=log)
    distributed.barrier()
    return summarize(group, log=log) if main else {}


def describe_splits(splits: DataSplits) -> str:
    return (f"data: {splits.description}: {len(splits.train)} train / "
            f"{len(splits.val) if splits.val is not None else 0} val / {len(splits.test)} test, "
            f"{splits.num_classes} classes")


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True, log: Log = print) -> Path:
    """Train every seed (or fold) of `cfg` into a new group folder and write the summary table."""
    if not distributed.setup(cfg.device).is_main:
        log = lambda line: None  # noqa: E731
    splits = load_data(cfg, log)
    log(describe_splits(splits))
    group = new_group(cfg)
    log(f"run folder: {group}")
    run_in_group(cfg, group, splits, progress=progress, log=log)
    return group


def summarize(group: Path, *, log: Log = print) -> dict:
    """Build results.csv, summary.json and summary.md from the units' results.json files."""
    cfg = load_experiment(group / "experiment.yaml")
    results = [read_json(group / unit / "results.json") for unit in unit_names(cfg)]
    lab = lab_reference(cfg.experiment_name)
    accs, losses = [r["test_acc"] for r in results], [r["test_loss"] for r in results]
    summary = {
        "experiment": cfg.experiment_name, "model": cfg.model, "seeds": cfg.seeds, "folds": cfg.data.folds,
        "runs": results,
        "test_acc_mean": mean_std(accs)[0], "test_acc_std": mean_std(accs)[1],
        "test_loss_mean": mean_std(losses)[0], "test_loss_std": mean_std(losses)[1],
        "mean_epoch_time_s": mean_std([r["mean_epoch_time_s"] for r in results])[0],
        "lab": lab,
    }
    if cfg.data.folds:
        held = [r["final_val_acc"] for r in results]
        summary.update(heldout_acc_mean=mean_std(held)[0], heldout_acc_std=mean_std(held)[1])
    atomic_write_json(group / "summary.json", summary)
    buffer = io.StringIO()
    columns = ["seed", "test_loss", "test_acc", "final_val_acc", "best_val_acc", "mean_epoch_time_s", "wall_time_s"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    atomic_write_text(group / "results.csv", buffer.getvalue())
    if cfg.data.folds:
        title = f"{cfg.experiment_name}: {cfg.data.folds}-fold cross-validation (seed {cfg.seeds[0]})"
        render = lambda md: folds_table(results, markdown=md)  # noqa: E731
    else:
        title = f"{cfg.experiment_name}: test results over {len(results)} seed(s)"
        render = lambda md: seeds_table(results, lab, markdown=md)  # noqa: E731
    atomic_write_text(group / "summary.md", f"# {title}\n\n{render(True)}\n"
                      + (f"\nLab figures: {lab['note']}.\n" if lab and not cfg.data.folds else ""))
    log(f"\n{title}\n{render(False)}\n\nresults: {group}")
    return summary


def _is_group(path: Path) -> bool:
    return (path / "experiment.yaml").is_file()


def resume(path: Path, *, device: str | None = None, progress: bool = True, log: Log = print) -> Path:
    """Continue an interrupted run folder, every unfinished unit of a group, or of an ablation."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: run folder does not exist")
    if not distributed.setup(device or "auto").is_main:
        log = lambda line: None  # noqa: E731
    if (path / "config.yaml").is_file() and _is_group(path.parent):
        groups, only = [path.parent], path.name
    elif _is_group(path):
        groups, only = [path], None
    elif (path / "ablation.yaml").is_file():
        from cnnlab.ablation.runner import resume_ablation

        return resume_ablation(path, device=device, progress=progress, log=log)
    else:
        raise RunError(f"{path}: not a cnnlab run folder (no config.yaml, experiment.yaml or ablation.yaml)")
    for group in groups:
        resume_group(group, only=only, device=device, progress=progress, log=log)
    return path


def resume_group(group: Path, *, only: str | None = None, device: str | None = None, progress: bool = True,
                 log: Log = print) -> None:
    cfg = load_experiment(group / "experiment.yaml")
    if device:
        cfg.device = device
    splits = None
    for unit in unit_names(cfg):
        folder = group / unit
        if (only and unit != only) or (folder / "results.json").is_file():
            continue
        splits = splits or load_data(cfg, log)
        folder.mkdir(exist_ok=True)
        resumable = (folder / "checkpoint.pt").is_file()
        train_seed(cfg, folder, unit_data(cfg, splits, unit), seed=unit_seed(cfg, unit), resume=resumable,
                   progress=progress, log=log)
    distributed.barrier()
    if not distributed.current().is_main:
        return
    if all((group / unit / "results.json").is_file() for unit in unit_names(cfg)):
        summarize(group, log=log)
    else:
        log(f"{group}: some runs are still unfinished; `cnnlab resume {group}` continues them")
