"""One training run (one seed) into its own folder: the shared machinery of every experiment.

A run folder holds everything that made the run and everything it produced:
`config.yaml` (resolved), `environment.json` (versions, device, seed), `model.txt`
(summary), `metrics.csv` (every epoch), `checkpoint.pt` (every epoch, atomic),
`model.safetensors`, `results.json`, `curves.png` and `status.json`.
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
import yaml
from torch import nn

import cnnlab
from cnnlab.config import ExperimentConfig, config_to_dict
from cnnlab.data.batches import epoch_generator, num_batches
from cnnlab.data.images import DataSplits
from cnnlab.data.preprocess import BatchPreprocessor, augmentation_enabled
from cnnlab.errors import ConfigError, RunError, RunInterrupted, TrainingDiverged
from cnnlab.fileio import atomic_write_json, atomic_write_text, read_json
from cnnlab.models import create_model, get_model_entry, initialise, model_preprocessing, model_summary
from cnnlab.reporting.curves import plot_learning_curves
from cnnlab.reporting.metrics import write_metrics
from cnnlab.training import distributed
from cnnlab.training.checkpoint import load_checkpoint, load_state_strict, save_checkpoint, save_weights
from cnnlab.training.device import resolve_device, rng_state, seed_everything, set_rng_state
from cnnlab.training.loop import evaluate, resolve_amp, train_one_epoch
from cnnlab.training.features import cached_features, feature_preprocess
from cnnlab.training.phases import (apply_phase, freeze_for_phase, phase_index, phase_start_epoch, resolve_phases,
                                    set_train_mode, total_epochs, trains_head_only)

Log = Callable[[str], None]


def build_model(cfg: ExperimentConfig, num_classes: int, input_size: tuple[int, int, int]) -> nn.Module:
    """Create the registered model for this data and apply the configured initialiser."""
    get_model_entry(cfg.model)  # unknown names fail here, listing the valid ones
    model = create_model(cfg.model, num_classes=num_classes, in_channels=input_size[0],
                         image_size=input_size[1], **cfg.model_args)
    return initialise(model, cfg.init)


def uses_feature_cache(cfg: ExperimentConfig, model: nn.Module, phase) -> bool:
    """A phase can train on cached features when the backbone is frozen and nothing is augmented."""
    augmented = augmentation_enabled(cfg.preprocess.augment) and phase.augment
    return (cfg.train.feature_cache and hasattr(model, "forward_features") and hasattr(model, "head")
            and not augmented and trains_head_only(model, phase))


def environment_record(device: torch.device, seed: int) -> dict:
    return {
        "seed": seed, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
        "platform": platform.platform(), "cnnlab": cnnlab.__version__, "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": np.__version__,
        "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _status(run_dir: Path, state: str, **extra) -> None:
    atomic_write_json(run_dir / "status.json", {"state": state, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra})


def _epoch_line(row: dict, epochs: int) -> str:
    val = (f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
           if row.get("val_loss") is not None else "no validation split")
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc "
            f"{100 * row['train_acc']:.2f}%  {val}  ({row['epoch_time_s']:.1f}s)")


def _restore(model: nn.Module, state: dict, run_dir: Path | None, checkpoint_path: Path, model_name: str) -> list[dict]:
    """Load weights and RNG state from a checkpoint; return the metrics history it holds."""
    load_state_strict(model, state["model"], source=checkpoint_path, model_name=model_name)
    set_rng_state(state["rng"])
    history = list(state["history"])
    if run_dir is not None:
        write_metrics(run_dir / "metrics.csv", history)  # drop rows of an epoch the checkpoint lacks
    return history


def _write_run_record(cfg: ExperimentConfig, run_dir: Path, model: nn.Module, first_phase, input_size,
                      device: torch.device, seed: int) -> None:
    """What made the run: resolved configuration, environment, and the model summary."""
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**config_to_dict(cfg), "seeds": [seed]},
                                                              sort_keys=False))
    atomic_write_json(run_dir / "environment.json", environment_record(device, seed))
    freeze_for_phase(model, first_phase)  # the summary counts what the first phase trains
    summary = model_summary(model, input_size, device=device)
    atomic_write_text(run_dir / "model.txt", summary.render(cfg.model) + "\n")


def _cached_feature_sets(cfg: ExperimentConfig, model: nn.Module, sets: tuple, preprocess, device: torch.device,
                         amp: bool, channels_last: bool, log: Log) -> tuple:
    """Each split's backbone features, from the on-disk cache or computed once into it."""
    tick = time.perf_counter()
    out, hits = [], []
    for split in sets:
        if split is None:
            out.append(None)
            continue
        features, hit = cached_features(model, split, preprocess, cache_dir=cfg.train.feature_cache_dir,
                                        batch_size=cfg.train.eval_batch_size, device=device, amp=amp,
                                        channels_last=channels_last, log=log)
        out.append(features.to(device))
        hits.append(hit)
    log(f"features: {'reused from the cache' if all(hits) else 'computed and cached'} "
        f"in {time.perf_counter() - tick:.1f}s")
    return tuple(out)


def train_seed(cfg: ExperimentConfig, run_dir: Path, splits: DataSplits, *, seed: int, resume: bool = False,
               progress: bool = True, log: Log = print) -> dict:
    """Train one seed of `cfg` in `run_dir` (resuming from its checkpoint if asked); return its results."""
    run_dir = Path(run_dir)
    ctx = distributed.current()
    device = distributed.device_for(ctx, resolve_device(cfg.device))
    if not ctx.is_main:  # one process writes and prints; the others only train
        log, progress = (lambda line: None), False
    shard = (ctx.rank, ctx.world)
    tc = cfg.train
    seed_everything(seed)
    model = build_model(cfg, splits.num_classes, splits.input_size)
    channels_last = tc.channels_last and device.type in ("cuda", "cpu")
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    preprocess = BatchPreprocessor.fit(cfg.preprocess, splits.train,
                                       model_preprocessing(cfg.model, cfg.model_args))
    preprocess_state = preprocess.state()
    phases = resolve_phases(tc)
    epochs = total_epochs(tc)
    if tc.batch_size % ctx.world:
        raise ConfigError(f"train.batch_size {tc.batch_size} must be divisible by the {ctx.world} processes")
    steps = num_batches(len(splits.train), tc.batch_size)
    train_loss = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
    eval_loss = nn.CrossEntropyLoss()
    history: list[dict] = []
    start_epoch = 1
    checkpoint_path = run_dir / "checkpoint.pt"
    resumed: dict | None = None
    amp = resolve_amp(tc.amp, device)

    if resume:
        resumed = load_checkpoint(checkpoint_path, model_name=cfg.model)
        history = _restore(model, resumed, run_dir if ctx.is_main else None, checkpoint_path, cfg.model)
        start_epoch = int(resumed["epoch"]) + 1
        log(f"resuming {run_dir} at epoch {start_epoch}/{epochs}")
    elif ctx.is_main:
        _write_run_record(cfg, run_dir, model, phases[0], splits.input_size, device, seed)

    image_sets = tuple(s.to(device) if s is not None else None for s in (splits.train, splits.val, splits.test))
    batch_preprocess, augment = preprocess, preprocess.augment
    feature_sets: list = []  # computed on the first phase that can use them

    def phase_data(phase) -> tuple:
        """(train, val, test), preprocessing, trained module and memory format for `phase`."""
        if uses_feature_cache(cfg, model, phase):
            # The backbone is a fixed function in this phase: train the head on its cached features.
            if not feature_sets:
                feature_sets.extend(_cached_feature_sets(cfg, model, image_sets, batch_preprocess, device, amp,
                                                         channels_last, log))
            return tuple(feature_sets), feature_preprocess, model.head, False
        batch_preprocess.augment = augment and phase.augment
        return image_sets, batch_preprocess, model, channels_last

    run_start = time.perf_counter()
    status = (lambda state, **extra: _status(run_dir, state, **extra)) if ctx.is_main else (lambda *a, **k: None)
    status("running", epoch=start_epoch - 1)
    cached_phases = 0
    current = None
    try:
        for epoch in range(start_epoch, epochs + 1):
            index = phase_index(phases, epoch)
            if index != current:  # a new phase: freeze/unfreeze and rebuild the optimizer
                phase = phases[index]
                optimizer, scheduler, parts = apply_phase(model, phase, tc.optimizer, tc, steps)
                (train_set, val_set, _), prep, trained, memory_cl = phase_data(phase)
                cached_phases += prep is feature_preprocess
                if resumed is not None and resumed.get("phase") == index:
                    optimizer.load_state_dict(resumed["optimizer"])
                    scheduler.load_state_dict(resumed["scheduler"])
                # DDP is rebuilt for each phase: it registers the parameters that train now.
                train_model = distributed.wrap(trained, ctx, device)
                if tc.compile:
                    train_model = torch.compile(train_model)
                if len(phases) > 1:
                    log(f"phase '{phase.name}' (epochs {phase_start_epoch(phases, index)}-"
                        f"{phase_start_epoch(phases, index) + phase.epochs - 1}): training {', '.join(parts)}")
                current, resumed = index, None
            tick = time.perf_counter()
            train_metrics = train_one_epoch(
                train_model, train_set, preprocess=prep, optimizer=optimizer, scheduler=scheduler,
                loss_fn=train_loss, batch_size=tc.batch_size, generator=epoch_generator(seed, epoch),
                epoch=epoch, amp=amp, channels_last=memory_cl, progress=progress,
                train_mode=lambda m: set_train_mode(m, phase), shard=shard)
            val_metrics = (evaluate(trained, val_set, preprocess=prep, loss_fn=eval_loss,
                                    batch_size=tc.eval_batch_size, amp=amp, channels_last=memory_cl, shard=shard)
                           if val_set is not None else {"loss": None, "acc": None})
            row = {"epoch": epoch, "phase": phase.name, "train_loss": train_metrics["loss"],
                   "train_acc": train_metrics["acc"], "val_loss": val_metrics["loss"], "val_acc": val_metrics["acc"],
                   "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - tick}
            history.append(row)
            if ctx.is_main:
                save_checkpoint(checkpoint_path, {
                    "model_name": cfg.model, "seed": seed, "epoch": epoch, "phase": index,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state(), "history": history})
                write_metrics(run_dir / "metrics.csv", history)
            log(_epoch_line(row, epochs))
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else 0
        status("interrupted", epoch=done)
        raise RunInterrupted(f"interrupted; epochs 1..{done} are saved in {checkpoint_path}. "
                             f"Continue with: cnnlab resume {run_dir}") from None
    except TrainingDiverged as exc:
        status("diverged", epoch=exc.epoch, step=exc.step)
        raise

    (_, _, test_set), prep, trained, memory_cl = phase_data(phases[-1])
    test = evaluate(trained, test_set, preprocess=prep, loss_fn=eval_loss,
                    batch_size=tc.eval_batch_size, amp=amp, channels_last=memory_cl, shard=shard)
    if not ctx.is_main:
        return {"test_loss": test["loss"], "test_acc": test["acc"], "seed": seed}
    save_weights(run_dir / "model.safetensors", model, model_name=cfg.model, class_names=splits.class_names)
    epoch_times = [r["epoch_time_s"] for r in history]
    results = {
        "experiment": cfg.experiment_name, "model": cfg.model, "seed": seed, "epochs": epochs,
        "test_loss": test["loss"], "test_acc": test["acc"],
        "final_val_loss": history[-1]["val_loss"], "final_val_acc": history[-1]["val_acc"],
        "best_val_acc": max((r["val_acc"] for r in history if r["val_acc"] is not None), default=None),
        "mean_epoch_time_s": float(np.mean(epoch_times)), "median_epoch_time_s": float(np.median(epoch_times)),
        "wall_time_s": float(sum(epoch_times)) if resume else time.perf_counter() - run_start,
        "device": str(device), "num_train": len(splits.train),
        "num_val": len(splits.val) if splits.val is not None else 0, "num_test": len(splits.test),
        "preprocess": preprocess_state, "feature_cache": prep is feature_preprocess or cached_phases > 0,
        "processes": ctx.world, "global_batch_size": tc.batch_size,
    }
    atomic_write_json(run_dir / "results.json", results)
    plot_learning_curves(run_dir / "metrics.csv", run_dir / "curves.png",
                         title=f"{cfg.experiment_name} — seed {seed}")
    status("finished", epoch=epochs)
    log(f"seed {seed}: test loss {test['loss']:.4f}, test accuracy {100 * test['acc']:.2f}%  → {run_dir}")
    return results


def read_run_config(run_dir: Path) -> ExperimentConfig:
    from cnnlab.config import load_experiment

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a cnnlab run folder (no config.yaml)")
    return load_experiment(path)


def read_results(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / "results.json")
