"""An experiment: N seeds (or K folds) of one configuration, each in its own run folder.

    runs/<experiment>/<time>-<id>/experiment.yaml   the resolved configuration
                                 /seed-<s>/...      one run folder per seed (training/run_folder.py)
                                 /fold-<k>/...      ... or per fold with data.folds = K
                                 /results.csv       one row per run
                                 /summary.json      per-run results, mean ± std, the lab's figures
                                 /summary.md        the table, ready for a report
                                 /status.json       only when the experiment failed: the message
"""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Callable

import cnnlab.layout as layout
from cnnlab.config import (ExperimentConfig, flat_config, list_builtin_experiments, load_experiment, model_spec,
                           save_config)
from cnnlab.data.images import DataSplits
from cnnlab.data.preprocess import check_crop_fits
from cnnlab.data.loading import load_splits, named_image_size
from cnnlab.data.sources import scheme_source
from cnnlab.data.split import kfold_splits
from cnnlab.data.leaks import NEAR_EXACT, find_leaks, leak_rows, leaked_test_images
from cnnlab.errors import CnnlabError, DataError, DiskFull, RunError, RunInterrupted
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir
from cnnlab.models import get_model_entry, model_preprocessing
from cnnlab.reference import lab_data_differences, lab_data_kind_matches, lab_data_matches, lab_reference
from cnnlab.reporting.curves import plot_overlay
from cnnlab.reporting.interpretation import pool_interpretation, write_rows_csv
from cnnlab.reporting.tables import (MULTILABEL_FIGURES, folds_table, is_multilabel, mean_std, multilabel_folds_rows,
                                     multilabel_seeds_rows, render_table, seeds_table, trust_rows)
from cnnlab.studies.layout import describe_setup, read_results, unit_names, unit_seed
from cnnlab.studies.parallel import Unit, train_together, wins
from cnnlab.studies.preflight import check_experiment
from cnnlab.training import distributed
from cnnlab.models.summary import macs_per_image
from cnnlab.training.device import resolve_device
from cnnlab.training.imbalance import imbalance_note
from cnnlab.training.learner import build_model, silent, train_seed
from cnnlab.training.task import task_for

Log = Callable[[str], None]


def unit_data(cfg: ExperimentConfig, base: DataSplits, unit: str) -> DataSplits:
    """The splits of one unit: the shared hold-out, or fold k of the training set."""
    if not unit.startswith("fold-"):
        return base
    k = int(unit.removeprefix("fold-"))
    fit, held = kfold_splits(base.train, cfg.data.folds, cfg.data.split_seed)[k - 1]
    return dataclasses.replace(base, train=fit, val=held, description=f"{base.description}, fold {k}/{cfg.data.folds}")


def load_data(cfg: ExperimentConfig, log: Log = print) -> DataSplits:
    """The experiment's data, sized and resized as its model's pretrained weights (or input) expect."""
    splits = load_splits(cfg.data, model_preprocessing(cfg.model, cfg.model_args), log=log,
                         default_size=get_model_entry(cfg.model).input_size[1])
    # a crop too large for the images fails here, before a run folder exists, not at the first batch
    check_crop_fits(cfg.preprocess.augment.crop, *splits.input_size[-2:])
    task_for(cfg, splits)  # a single-label experiment given multi-label data (or the reverse): one line, now
    log(describe_splits(splits))
    note = imbalance_note(splits.train.labels, splits.class_names)
    if note:
        log(f"note: {note}")
    check_leaks(cfg, splits)
    return splits


def check_leaks(cfg: ExperimentConfig, splits: DataSplits) -> None:
    """data.leak_check: test images with a near-exact duplicate in train or validation (data/leaks.py), kept on
    the splits (the experiment folder lists them, results.json counts them); `error` refuses to train."""
    if cfg.data.leak_check == "off":
        return
    splits.leaks = find_leaks(splits)
    if splits.leaks and cfg.data.leak_check == "error":
        shown = "; ".join(f"{leak.test} ~ {leak.other} ({leak.other_split})" for leak in splits.leaks[:3])
        raise DataError(f"{leaked_test_images(splits.leaks)} test image(s) have a near-exact duplicate in train or "
                        f"validation ({len(splits.leaks)} pair(s), perceptual hash within {NEAR_EXACT} of 64 bits), "
                        f"e.g. {shown}; `cnnlab audit` lists them "
                        "and --write-split writes a split without them (or set data.leak_check: warn)")


def data_key(cfg: ExperimentConfig) -> str:
    """Experiments with equal keys read the same splits, so one load can serve them all.

    An image size of 0 is the pretrained weights' own (as load_splits resolves it), so
    birdnet_recipe's 0 on ResNet50 shares the images V0–V4 load at 224 px instead of a second load.
    """
    size = named_image_size(cfg.data, model_preprocessing(cfg.model, cfg.model_args))
    data = dataclasses.replace(cfg.data, image_size=size)
    spec = model_spec(cfg)
    return repr((data, spec.backbone, spec.weights))


def describe_splits(splits: DataSplits) -> str:
    line = (f"data: {splits.description}: {len(splits.train)} train / "
            f"{len(splits.val) if splits.val is not None else 0} val / {len(splits.test)} test, "
            f"{splits.num_classes} classes")
    if not splits.multilabel:
        return line
    import torch

    parts = [s for s in (splits.train, splits.val, splits.test) if s is not None]
    counts = torch.cat([(s.labels > 0.5).sum(1) for s in parts])
    return (f"{line}, multi-label: {float(counts.float().mean()):.2f} labels an image, "
            f"{int((counts == 0).sum())} image(s) with none")


def record_data(cfg: ExperimentConfig, folder: Path, splits: DataSplits, log: Log = print) -> None:
    """Record in `cfg` what the data turned out to be: its classes, and a drawn split saved as split.csv
    (which the recorded configuration then names, so a resumed or repeated run reuses it exactly)."""
    cfg.data.num_classes = splits.num_classes
    cfg.task = splits.task  # single or multilabel, as the data turned out
    if cfg.data.source == "auto" and splits.source:
        cfg.data.source = splits.source  # the layout detected: a resume reads it the same way, the report names it
    if cfg.data.path and scheme_source(cfg.data.path) is None and Path(cfg.data.path).expanduser().exists():
        # a local path, recorded absolute: `cnnlab resume` from another folder reads the same data
        cfg.data.path = str(Path(cfg.data.path).expanduser().absolute())
    if splits.split_rows is not None and not cfg.data.split_file:
        write_rows_csv(folder / "split.csv", splits.split_rows, ["path", "label", "split"])
        cfg.data.split_file = str((folder / "split.csv").resolve())
    if splits.leaks:
        write_rows_csv(folder / layout.LEAKS_FILE, leak_rows(splits.leaks),
                       ["test_image", "duplicate", "duplicate_split", "hash_distance"])
        log(f"warning: {leaked_test_images(splits.leaks)} of {len(splits.test)} test image(s) have a near-exact "
            f"duplicate in train or validation ({len(splits.leaks)} pair(s), perceptual hash within {NEAR_EXACT} of "
            f"64 bits): the test accuracy is partly measured "
            f"on images the model saw; the list: {folder / layout.LEAKS_FILE} (`cnnlab audit` looks further)")


def new_experiment_dir(cfg: ExperimentConfig, splits: DataSplits, parent: Path | None = None,
                       log: Log = print) -> Path:
    """A new experiment folder; under torchrun process 0 makes it and the others learn its name."""
    folder = None
    if distributed.current().is_main:
        folder = create_unique_dir(Path(parent) if parent else Path(cfg.out) / cfg.experiment_name)
        record_data(cfg, folder, splits, log)
        save_config(cfg, folder / layout.EXPERIMENT_FILE)
    folder = Path(distributed.broadcast(str(folder) if folder else None))
    cfg.data = distributed.broadcast(cfg.data)
    return folder


def run_units(cfg: ExperimentConfig, folder: Path, splits: DataSplits, *, progress: bool = True,
              log: Log = print, resume: bool = False, callbacks: list | tuple = ()) -> dict:
    """Train every unfinished unit (seed or fold) of `cfg` in its experiment folder, then summarise it.

    A failure marks the experiment folder (`status.json`) as well as the run's own; Ctrl-C
    names this folder, whose `cnnlab resume` finishes every unit.
    """
    ctx = distributed.current()
    units = unit_names(cfg)
    pending = []
    for unit in units:
        if (folder / unit / layout.RESULTS_FILE).is_file():
            continue
        resumes = resume and (folder / unit / "checkpoint.pt").is_file()
        threads = load_experiment(folder / unit / "config.yaml").train.threads if resumes else None
        pending.append(Unit(unit, folder / unit, unit_data(cfg, splits, unit), unit_seed(cfg, unit), resumes, threads))
    try:
        # a notebook's callbacks live in this process: their seeds train here, one after another
        if ctx.world == 1 and not callbacks and wins(cfg, splits, len(pending), resolve_device(cfg.device).type,
                                                     lambda: model_macs(cfg, splits)):
            for unit in pending:
                unit.run_dir.mkdir(exist_ok=True)
            train_together(cfg, folder, pending, log=log)
        for unit in pending:
            if (unit.run_dir / layout.RESULTS_FILE).is_file():
                continue
            if len(units) > 1:
                log(f"\n— {unit.name.replace('-', ' ')} ({units.index(unit.name) + 1}/{len(units)}) —")
            if ctx.is_main:
                unit.run_dir.mkdir(exist_ok=True)
            train_seed(unit.config(cfg), unit.run_dir, unit.splits, seed=unit.seed, resume=unit.resume,
                       progress=progress, log=log, callbacks=callbacks)
    except (RunInterrupted, DiskFull) as exc:  # what `cnnlab resume` of this folder finishes
        raise exc.resume_from(folder) from None
    except CnnlabError as exc:
        if ctx.is_main:
            try:
                atomic_write_json(folder / "status.json", {"state": "failed", "message": str(exc)})
            except RunError:  # the disk that failed the run may not take this file either
                pass
        raise
    distributed.barrier()
    return summarize_experiment(folder, log=log) if ctx.is_main else {}


def model_macs(cfg: ExperimentConfig, splits: DataSplits) -> int:
    """Multiply-adds of one image through the model of `cfg`: whether one run can fill the cores (its
    architecture only: no weights are read)."""
    return macs_per_image(build_model(cfg, splits.num_classes, splits.input_size, shape_only=True),
                          splits.input_size)


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True, log: Log = print,
                   splits: DataSplits | None = None, callbacks: list | tuple = ()) -> Path:
    """Train every seed (or fold) of `cfg` into a new experiment folder and write the summary table.
    `splits`: data already loaded (default: read as `cfg.data` says); `callbacks`: added to each seed's
    Learner (its seeds then train in this process).

    Under torchrun, call `distributed.setup()` first (the CLI does).
    """
    if not distributed.current().is_main:
        log = silent
    check_experiment(cfg, data_given=splits is not None)
    if splits is None:
        splits = load_data(cfg, log)
    folder = new_experiment_dir(cfg, splits, log=log)
    log(f"run folder: {folder}")
    run_units(cfg, folder, splits, progress=progress, log=log, callbacks=callbacks)
    return folder


def resume_experiment(folder: Path, *, device: str | None = None, progress: bool = True, log: Log = print) -> None:
    """Finish every unfinished unit of an experiment folder, then summarise it."""
    cfg = load_experiment(folder / layout.EXPERIMENT_FILE)
    if device:
        cfg.device = device
    if any(not (folder / unit / layout.RESULTS_FILE).is_file() for unit in unit_names(cfg)):
        run_units(cfg, folder, load_data(cfg, log), progress=progress, log=log, resume=True)
    elif distributed.current().is_main:
        log(f"{folder}: nothing to resume: every run has finished (its results again, read from its files)")
        summarize_experiment(folder, log=log)


# Keys that change how fast or where a run goes, not what it computes: a run differing from the
# lab's preset only in these still follows the lab's protocol.
NOT_PROTOCOL = ("name", "seeds", "seeds_together", "device", "out", "data.source", "data.path", "data.split_file",
                "data.download", "data.cache", "data.workers", "data.num_classes", "train.eval_batch_size", "train.channels_last",
                "train.amp", "train.compile", "train.threads", "train.feature_cache", "train.feature_cache_dir", "log.")


def protocol(cfg: ExperimentConfig) -> dict:
    """What a run computes: the flat configuration without the timing and location keys."""
    return {k: v for k, v in flat_config(cfg).items() if not k.startswith(NOT_PROTOCOL)}


# Keys a run resolves from its data: a preset's 'auto' computes what the run recorded after resolving it
# (the lab's presets say `task: auto`; a CIFAR run records `task: single`), so the two do not differ.
RESOLVED_FROM_DATA = ("task",)


def differing_keys(mine: dict, theirs: dict) -> list[str]:
    """The keys of two flat configurations whose values differ (or that only one has), sorted."""
    def differ(key: str) -> bool:
        if key in RESOLVED_FROM_DATA and "auto" in (mine.get(key), theirs.get(key)):
            return False
        return mine.get(key) != theirs.get(key)
    return sorted(k for k in mine.keys() | theirs.keys() if differ(k))


def protocol_differences(cfg: ExperimentConfig, reference: ExperimentConfig) -> list[str]:
    """The keys where `cfg` computes something else than `reference` (timing and location keys aside)."""
    return differing_keys(protocol(cfg), protocol(reference))


def follows_lab_protocol(name: str, cfg: ExperimentConfig, reference: ExperimentConfig | None,
                         results: list[dict]) -> bool:
    """The lab's recipe (the preset, unchanged but for speed and location) on data of the lab's sizes."""
    first = results[0]
    return (reference is not None and not protocol_differences(cfg, reference)
            and lab_data_matches(name, num_classes=cfg.data.num_classes,
                                 train_images=first["num_train"] + first["num_val"], test_images=first["num_test"]))


def lab_for(cfg: ExperimentConfig, results: list[dict]) -> dict | None:
    """The lab's figures for this experiment — only where the data is the lab's (its source and classes:
    reference.LAB_DATA) — marked with whether the run followed the lab's protocol, and what differs if not:
    the recipe's keys (with the run's value and the lab's) and the data's sizes."""
    lab = lab_reference(cfg.experiment_name)
    first = results[0]
    sizes = {"num_classes": cfg.data.num_classes, "train_images": first["num_train"] + first["num_val"],
             "test_images": first["num_test"]}
    if lab is None or not lab_data_kind_matches(cfg.experiment_name, source=cfg.data.source, **sizes):
        return None  # another data set (your photos, a re-split subset): the lab's figure is no reference
    preset = (load_experiment(cfg.experiment_name) if cfg.experiment_name in list_builtin_experiments() else None)
    differs = lab_data_differences(cfg.experiment_name, **sizes)
    if preset is None:
        differs.append("an experiment of its own (not the preset)")
    else:
        mine, theirs = protocol(cfg), protocol(preset)
        differs += [f"{key} {mine.get(key)!r} (lab {theirs.get(key)!r})" for key in differing_keys(mine, theirs)]
    return {**lab, "same_protocol": not differs, "differs": differs}


def class_balanced_summary(results: list[dict]) -> dict:
    """Mean and std of balanced accuracy and macro-F1 over the runs (none for runs from before cnnlab 0.10)."""
    out = {}
    for key in ("test_bal_acc", "test_macro_f1"):
        values = [r.get(key) for r in results]
        if all(v is not None for v in values):
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std(values)
    return out


def summarize_experiment(folder: Path, *, log: Log = print) -> dict:
    """Build results.csv, summary.json and summary.md from the units' results.json files."""
    cfg = load_experiment(folder / layout.EXPERIMENT_FILE)
    results = [read_results(folder / unit / layout.RESULTS_FILE) for unit in unit_names(cfg)]
    if is_multilabel(results):
        return summarize_multilabel(folder, cfg, results, log=log)
    lab = lab_for(cfg, results)
    accs, losses = [r["test_acc"] for r in results], [r["test_loss"] for r in results]
    summary = {
        "experiment": cfg.experiment_name, "model": cfg.model, "seeds": cfg.seeds, "folds": cfg.data.folds,
        "runs": results,
        "test_acc_mean": mean_std(accs)[0], "test_acc_std": mean_std(accs)[1],
        "test_loss_mean": mean_std(losses)[0], "test_loss_std": mean_std(losses)[1],
        **class_balanced_summary(results),
        "mean_epoch_time_s": mean_std([r["mean_epoch_time_s"] for r in results])[0],
        "lab": lab,
    }
    if cfg.data.folds:
        held = [r["final_val_acc"] for r in results]
        summary.update(heldout_acc_mean=mean_std(held)[0], heldout_acc_std=mean_std(held)[1])
    atomic_write_json(folder / layout.SUMMARY_FILE, summary)
    buffer = io.StringIO()
    columns = ["seed", "test_loss", "test_acc", "test_bal_acc", "test_macro_f1", "final_val_acc", "final_val_bal_acc",
               "best_val_acc", "mean_epoch_time_s", "wall_time_s", "temperature", "test_nll", "test_ece",
               "test_ece_uncalibrated", "test_coverage_90", "test_set_size_90"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    atomic_write_text(folder / "results.csv", buffer.getvalue())
    if cfg.data.folds:
        title = f"{cfg.experiment_name}: {cfg.data.folds}-fold cross-validation (seed {cfg.seeds[0]})"
        render = lambda md: folds_table(results, markdown=md)  # noqa: E731
    else:
        title = f"{cfg.experiment_name}: test results over {len(results)} seed(s) — {describe_setup(cfg, results)}"
        render = lambda md: seeds_table(results, lab, markdown=md)  # noqa: E731
    trust = trust_rows(results)  # calibration, conformal sets, 'unknown' (trust/): None before 0.13
    trust_md = f"\n## Can I trust its probabilities?\n\n{render_table(*trust, markdown=True)}\n" if trust else ""
    atomic_write_text(folder / "summary.md", f"# {title}\n\n{render(True)}\n"
                      + (f"\nLab figures: {lab['note']}.\n" if lab and not cfg.data.folds else "") + trust_md)
    metrics = [folder / unit / "metrics.csv" for unit in unit_names(cfg)]
    monitored = "val_acc" if results[0].get("final_val_acc") is not None else "train_acc"
    if len(results) > 1:  # one run: its own curves.png is the figure
        plot_overlay({cfg.experiment_name: metrics}, folder / "curves.png", metric=monitored,
                     title=f"{cfg.experiment_name}: mean over {len(results)} runs, min-max band\n"
                           f"{describe_setup(cfg, results)}")
    pool_interpretation(folder, [folder / unit for unit in unit_names(cfg)],
                        title=f"{cfg.experiment_name}: test confusion pooled over {len(results)} run(s) (row-normalised)")
    trust_text = f"\n\nprobabilities (test split; fitted on validation):\n{render_table(*trust)}" if trust else ""
    log(f"\n{title}\n{render(False)}{trust_text}\n\nresults: {folder}")
    return summary


MULTILABEL_RESULTS_COLUMNS = ["seed", "test_loss", "test_map", "test_micro_f1", "test_macro_f1", "test_exact_match",
                              "test_hamming_loss", "test_map_classes", "final_val_map", "best_val_map",
                              "mean_epoch_time_s", "wall_time_s"]


def summarize_multilabel(folder: Path, cfg: ExperimentConfig, results: list[dict], *, log: Log = print) -> dict:
    """results.csv, summary.json and summary.md of a multi-label experiment: mAP, F1, exact match and Hamming loss
    as mean ± std over its runs."""
    summary = {"experiment": cfg.experiment_name, "model": cfg.model, "seeds": cfg.seeds, "folds": cfg.data.folds,
               "task": "multilabel", "runs": results, "lab": None,
               "mean_epoch_time_s": mean_std([r["mean_epoch_time_s"] for r in results])[0]}
    for key in ("test_loss", *(key for key, _ in MULTILABEL_FIGURES)):
        summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std([r[key] for r in results])
    atomic_write_json(folder / layout.SUMMARY_FILE, summary)
    write_rows_csv(folder / "results.csv", [{k: r.get(k) for k in MULTILABEL_RESULTS_COLUMNS} for r in results],
                   MULTILABEL_RESULTS_COLUMNS)
    rows = multilabel_folds_rows(results) if cfg.data.folds else multilabel_seeds_rows(results)
    what = f"{cfg.data.folds}-fold cross-validation (seed {cfg.seeds[0]})" if cfg.data.folds else \
        f"test results over {len(results)} seed(s) — {describe_setup(cfg, results)}"
    title = f"{cfg.experiment_name} (multi-label): {what}"
    note = ("F1, exact match and Hamming loss at each class's threshold chosen on the validation split "
            f"(train.thresholds: {results[0].get('thresholds', 'f1')}); mAP over the classes with a positive in test")
    atomic_write_text(folder / "summary.md", f"# {title}\n\n{render_table(*rows, markdown=True)}\n\n{note}.\n")
    metrics = [folder / unit / "metrics.csv" for unit in unit_names(cfg)]
    if len(results) > 1 and results[0].get("final_val_map") is not None:
        plot_overlay({cfg.experiment_name: metrics}, folder / "curves.png", metric="val_map",
                     title=f"{cfg.experiment_name}: mean over {len(results)} runs, min-max band\n"
                           f"{describe_setup(cfg, results)}")
    log(f"\n{title}\n{render_table(*rows)}\n{note}.\n\nresults: {folder}")
    return summary
