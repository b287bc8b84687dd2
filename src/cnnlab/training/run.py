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
from cnnlab.data.preprocess import BatchPreprocessor
from cnnlab.errors import RunError, RunInterrupted, TrainingDiverged
from cnnlab.fileio import atomic_write_json, atomic_write_text, read_json
from cnnlab.models import create_model, get_model_entry, initialise, model_summary
from cnnlab.reporting.curves import plot_learning_curves
from cnnlab.reporting.metrics import write_metrics
from cnnlab.training.checkpoint import load_checkpoint, load_state_strict, save_checkpoint, save_weights
from cnnlab.training.device import resolve_device, rng_state, seed_everything, set_rng_state
from cnnlab.training.loop import evaluate, train_one_epoch
from cnnlab.training.optim import build_optimizer, build_scheduler

Log = Callable[[str], None]


def build_model(cfg: ExperimentConfig, num_classes: int, input_size: tuple[int, int, int]) -> nn.Module:
    """Create the registered model for this data and apply the configured initialiser."""
    get_model_entry(cfg.model)  # unknown names fail here, listing the valid ones
    model = create_model(cfg.model, num_classes=num_classes, in_channels=input_size[0],
                         image_size=input_size[1], **cfg.model_args)
    return initialise(model, cfg.init)


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


def train_seed(cfg: ExperimentConfig, run_dir: Path, splits: DataSplits, *, seed: int, resume: bool = False,
               progress: bool = True, log: Log = print) -> dict:
    """Train one seed of `cfg` in `run_dir` (resuming from its checkpoint if asked); return its results."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    tc = cfg.train
    seed_everything(seed)
    model = build_model(cfg, splits.num_classes, splits.input_size)
    on_cuda = device.type == "cuda"
    channels_last = tc.channels_last and on_cuda
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    train_model = torch.compile(model) if tc.compile else model
    preprocess = BatchPreprocessor.fit(cfg.preprocess, splits.train)
    optimizer = build_optimizer(model.parameters(), tc.optimizer)
    steps = num_batches(len(splits.train), tc.batch_size)
    scheduler = build_scheduler(optimizer, tc, steps)
    train_loss = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
    eval_loss = nn.CrossEntropyLoss()
    history: list[dict] = []
    start_epoch = 1
    checkpoint_path = run_dir / "checkpoint.pt"

    if resume:
        state = load_checkpoint(checkpoint_path, model_name=cfg.model)
        load_state_strict(model, state["model"], source=checkpoint_path, model_name=cfg.model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        write_metrics(run_dir / "metrics.csv", history)  # drop rows of an epoch the checkpoint lacks
        log(f"resuming {run_dir} at epoch {start_epoch}/{tc.epochs}")
    else:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(
            {**config_to_dict(cfg), "seeds": [seed]}, sort_keys=False))
        atomic_write_json(run_dir / "environment.json", environment_record(device, seed))
        summary = model_summary(model, splits.input_size, device=device)
        atomic_write_text(run_dir / "model.txt", summary.render(cfg.model) + "\n")

    train_set, val_set, test_set = (s.to(device) if s is not None else None
                                    for s in (splits.train, splits.val, splits.test))
    amp = tc.amp and on_cuda
    run_start = time.perf_counter()
    _status(run_dir, "running", epoch=start_epoch - 1)
    try:
        for epoch in range(start_epoch, tc.epochs + 1):
            tick = time.perf_counter()
            train_metrics = train_one_epoch(
                train_model, train_set, preprocess=preprocess, optimizer=optimizer, scheduler=scheduler,
                loss_fn=train_loss, batch_size=tc.batch_size, generator=epoch_generator(seed, epoch),
                epoch=epoch, amp=amp, channels_last=channels_last, progress=progress)
            val_metrics = (evaluate(train_model, val_set, preprocess=preprocess, loss_fn=eval_loss,
                                    batch_size=tc.eval_batch_size, amp=amp, channels_last=channels_last)
                           if val_set is not None else {"loss": None, "acc": None})
            row = {"epoch": epoch, "phase": "train", "train_loss": train_metrics["loss"],
                   "train_acc": train_metrics["acc"], "val_loss": val_metrics["loss"], "val_acc": val_metrics["acc"],
                   "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - tick}
            history.append(row)
            save_checkpoint(checkpoint_path, {
                "model_name": cfg.model, "seed": seed, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                "history": history})
            write_metrics(run_dir / "metrics.csv", history)
            log(_epoch_line(row, tc.epochs))
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else 0
        _status(run_dir, "interrupted", epoch=done)
        raise RunInterrupted(f"interrupted; epochs 1..{done} are saved in {checkpoint_path}. "
                             f"Continue with: cnnlab resume {run_dir}") from None
    except TrainingDiverged as exc:
        _status(run_dir, "diverged", epoch=exc.epoch, step=exc.step)
        raise

    test = evaluate(train_model, test_set, preprocess=preprocess, loss_fn=eval_loss,
                    batch_size=tc.eval_batch_size, amp=amp, channels_last=channels_last)
    save_weights(run_dir / "model.safetensors", model, model_name=cfg.model, class_names=splits.class_names)
    epoch_times = [r["epoch_time_s"] for r in history]
    results = {
        "experiment": cfg.experiment_name, "model": cfg.model, "seed": seed, "epochs": tc.epochs,
        "test_loss": test["loss"], "test_acc": test["acc"],
        "final_val_loss": history[-1]["val_loss"], "final_val_acc": history[-1]["val_acc"],
        "best_val_acc": max((r["val_acc"] for r in history if r["val_acc"] is not None), default=None),
        "mean_epoch_time_s": float(np.mean(epoch_times)), "median_epoch_time_s": float(np.median(epoch_times)),
        "wall_time_s": float(sum(epoch_times)) if resume else time.perf_counter() - run_start,
        "device": str(device), "num_train": len(splits.train),
        "num_val": len(splits.val) if splits.val is not None else 0, "num_test": len(splits.test),
        "preprocess": preprocess.state(),
    }
    atomic_write_json(run_dir / "results.json", results)
    plot_learning_curves(run_dir / "metrics.csv", run_dir / "curves.png",
                         title=f"{cfg.experiment_name} — seed {seed}")
    _status(run_dir, "finished", epoch=tc.epochs)
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
