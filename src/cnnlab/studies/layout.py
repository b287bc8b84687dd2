"""How an experiment folder is laid out and titled: light enough for `cnnlab report` (no torch)."""
from __future__ import annotations

from pathlib import Path

from cnnlab.config import ExperimentConfig, load_experiment
from cnnlab.fileio import read_json


def unit_names(cfg: ExperimentConfig) -> list[str]:
    """The run folders of an experiment: one per seed, or one per fold (first seed)."""
    if cfg.data.folds:
        return [f"fold-{k}" for k in range(1, cfg.data.folds + 1)]
    return [f"seed-{s}" for s in cfg.seeds]


def unit_seed(cfg: ExperimentConfig, unit: str) -> int:
    return cfg.seeds[0] if unit.startswith("fold-") else int(unit.removeprefix("seed-"))


def describe_setup(cfg: ExperimentConfig, results: list[dict]) -> str:
    """What a table or figure is about: data, model/backbone, epochs and device."""
    data = Path(cfg.data.path).name if cfg.data.path else "CIFAR-100"
    backbone = cfg.model_args.get("backbone")
    model = f"{cfg.model} on {backbone}" if backbone else cfg.model
    return f"{model}, {data} ({cfg.data.num_classes} classes), {results[0]['epochs']} epochs, {results[0]['device']}"


def step_dir(folder: Path, index: int, name: str) -> Path:
    """An ablation step's experiment folder."""
    return folder / f"{index}-{name}"


def experiment_setup(folder: Path) -> str:
    """`describe_setup` of a finished experiment folder (e.g. an ablation's first step), from its files."""
    return describe_setup(load_experiment(folder / "experiment.yaml"), read_json(folder / "summary.json")["runs"])
