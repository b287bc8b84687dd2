"""How an experiment folder is laid out and titled: light enough for `cnnlab report` (no torch)."""
from __future__ import annotations

from pathlib import Path

import cnnlab.layout as layout
import cnnlab.records as records
from cnnlab.config import ExperimentConfig, load_experiment, model_spec
from cnnlab.errors import RunError
from cnnlab.fileio import read_json

_SHARE = records.number(at_least=0.0, at_most=1.0)  # an accuracy, as a fraction
_SECONDS = records.number(at_least=0.0)
# A finished run's results.json, as the tables, the report and the summaries read it.
RESULTS_SCHEMA = {
    "seed": records.integer(at_least=0), "test_acc": _SHARE, "test_loss": records.number(at_least=0.0),
    "epochs": records.integer(at_least=1), "epochs_trained": records.integer(at_least=0),
    "kept_epoch": records.integer(at_least=0), "num_train": records.integer(at_least=0),
    "num_val": records.integer(at_least=0), "num_test": records.integer(at_least=0),
    "wall_time_s": _SECONDS, "mean_epoch_time_s": _SECONDS, "device": records.text(),
    "final_val_acc": records.optional(_SHARE), "best_val_acc": records.optional(_SHARE),
    "test_bal_acc": records.optional(_SHARE), "test_macro_f1": records.optional(_SHARE),
    "median_epoch_time_s": records.optional(_SECONDS), "one_off_time_s": records.optional(_SECONDS),
    "phase_median_epoch_time_s": records.optional(records.mapping()),
    "stopped_early": records.optional(records.texts()),
}
# a multi-label run's (task: multilabel): mAP and F1 instead of accuracy
MULTILABEL_RESULTS_SCHEMA = {
    **{k: v for k, v in RESULTS_SCHEMA.items() if k not in ("test_acc", "final_val_acc", "best_val_acc",
                                                            "test_bal_acc")},
    "task": records.text(), "test_map": _SHARE, "test_micro_f1": _SHARE, "test_macro_f1": _SHARE,
    "test_exact_match": _SHARE, "test_hamming_loss": _SHARE, "final_val_map": records.optional(_SHARE),
    "best_val_map": records.optional(_SHARE),
}
SUMMARY_SCHEMA = {
    "experiment": records.text(), "runs": records.list_of(records.mapping(), min_len=1),
    "test_acc_mean": _SHARE, "test_acc_std": records.number(at_least=0.0), "test_loss_mean": records.number(at_least=0.0),
    "test_loss_std": records.number(at_least=0.0),
}
MULTILABEL_SUMMARY_SCHEMA = {
    **{k: v for k, v in SUMMARY_SCHEMA.items() if not k.startswith("test_acc")},
    "task": records.text(), "test_map_mean": _SHARE, "test_map_std": records.number(at_least=0.0),
}


def _results_schema(record) -> dict:
    multilabel = isinstance(record, dict) and record.get("task") == "multilabel"
    return MULTILABEL_RESULTS_SCHEMA if multilabel else RESULTS_SCHEMA


def read_results(path: Path) -> dict:
    """A run's results.json, every field the tables and report use checked (one line naming the file and field)."""
    record = read_json(path)
    return records.check(record, _results_schema(record), path, error=RunError, what="a run's results")


def read_summary(path: Path) -> dict:
    """An experiment's summary.json, checked, each of its runs as a run's results are."""
    record = read_json(path)
    schema = MULTILABEL_SUMMARY_SCHEMA if isinstance(record, dict) and record.get("task") == "multilabel" \
        else SUMMARY_SCHEMA
    summary = records.check(record, schema, path, error=RunError, what="an experiment's summary")
    summary["runs"] = [records.check(run, _results_schema(run), f"{path}: runs[{i}]", error=RunError,
                                     what="a run's results")
                       for i, run in enumerate(summary["runs"])]
    return summary


def unit_names(cfg: ExperimentConfig) -> list[str]:
    """The run folders of an experiment: one per seed, or one per fold (first seed)."""
    if cfg.data.folds:
        return [layout.fold_folder(k) for k in range(1, cfg.data.folds + 1)]
    return [layout.seed_folder(s) for s in cfg.seeds]


def unit_seed(cfg: ExperimentConfig, unit: str) -> int:
    kind, _, number = unit.partition("-")  # layout.seed_folder / fold_folder's names
    return cfg.seeds[0] if kind == "fold" else int(number)


def describe_setup(cfg: ExperimentConfig, results: list[dict]) -> str:
    """What a table or figure is about: data, model/backbone, epochs and device."""
    data = Path(cfg.data.path).name if cfg.data.path else "CIFAR-100"
    backbone = model_spec(cfg).backbone
    model = f"{cfg.model} on {backbone}" if backbone else cfg.model
    return f"{model}, {data} ({cfg.data.num_classes} classes), {results[0]['epochs']} epochs, {results[0]['device']}"


def step_dir(folder: Path, index: int, name: str) -> Path:
    """An ablation step's experiment folder."""
    return folder / f"{index}-{name}"


def experiment_setup(folder: Path) -> str:
    """`describe_setup` of a finished experiment folder (e.g. an ablation's first step), from its files."""
    return describe_setup(load_experiment(folder / layout.EXPERIMENT_FILE), read_summary(folder / layout.SUMMARY_FILE)["runs"])
