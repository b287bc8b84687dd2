"""A run folder and everything written into it, behind one object.

    seed-<s>/config.yaml        resolved configuration of this run (rerun it with --config)
             environment.json   seed, device, library versions, command line
             model.txt          the model summary
             metrics.csv        one row per epoch, rewritten atomically every epoch
             checkpoint.pt      model, optimizer, scheduler, RNG state (every epoch, atomic)
             checkpoint-phaseK-start.pt   the whole model as phase K (with frozen parameters)
                                started; checkpoint.pt then holds only what trains
             model.safetensors  the trained weights
             results.json       test figures (accuracy, balanced accuracy, macro-F1), timings, preprocessing
             test_predictions.csv   every test image: true class, predicted class, probability
             trust.json         calibration, conformal coverage and the 'unknown' rule on the test split
                                (trust/; the report draws its reliability diagram and risk-coverage curve)
             curves.png         learning curves
             status.json        running / finished / interrupted / diverged / failed
             tensorboard/, mlflow.json   with --log tensorboard / mlflow (training/trackers.py, fed by the
                                Trackers callback, training/callbacks.py)

Under torchrun only process 0 writes: every other process gets a folder whose writing
methods do nothing (nanoGPT's `master_process`, torchvision's `save_on_master`), so the
training code needs no `if rank == 0` branches.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import cnnlab.layout as layout
from cnnlab.config import ExperimentConfig, save_config
from cnnlab.errors import RunError
from cnnlab.fileio import atomic_write_json, atomic_write_text, remove_write_debris
from cnnlab.reporting.curves import plot_learning_curves
from cnnlab.reporting.interpretation import (confusion, most_confused, per_class, plot_confusion, plot_top_losses,
                                             top_losses, write_confusion_csv, write_rows_csv)
from cnnlab.reporting.metrics import write_metrics
from cnnlab.training.checkpoint import load_checkpoint, save_checkpoint, save_weights
from cnnlab.training.device import cpuinfo_field


def cpu_name() -> str:
    """The CPU's model name (platform.processor() is empty on Linux)."""
    return cpuinfo_field("model name") or platform.processor()


def environment_record(device, seed: int) -> dict:
    from importlib.metadata import version

    import numpy as np
    import torch

    from cnnlab.version import __version__

    return {
        "seed": seed, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
        "platform": platform.platform(), "cnnlab": __version__, "torch": torch.__version__,
        "torchvision": version("torchvision"), "numpy": np.__version__,
        "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


class RunFolder:
    def __init__(self, path: Path, *, writes: bool = True):
        self.path, self.writes = Path(path), writes

    @contextlib.contextmanager
    def held(self):
        """Hold the folder's lock (`.lock`, fcntl) while training into it: a second process — a resume
        started while an orphaned worker of a killed run still trains this seed — is refused in one line
        instead of writing the same checkpoint. The lock goes with the process, however it ends."""
        if not self.writes:
            yield
            return
        try:
            import fcntl
        except ImportError:  # no fcntl (Windows): folders are still never shared by new runs (create_unique_dir)
            yield
            return
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise RunError(f"{self.path}: another cnnlab process (pid {holder}) is training this run now; "
                               "wait for it to end (or stop it), then resume") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            remove_write_debris(self.path)
            yield

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def read_checkpoint(self, model_name: str) -> dict:
        return load_checkpoint(self.checkpoint_path, model_name=model_name)

    def status(self, state: str, **extra) -> None:
        if self.writes:
            atomic_write_json(self.path / "status.json",
                              {"state": state, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra})

    def status_on_the_way_out(self, state: str, **extra) -> None:
        """status(), for a run already stopping: a disk too full for status.json must not hide why it stopped."""
        try:
            self.status(state, **extra)
        except RunError:
            pass

    def record(self, cfg: ExperimentConfig, *, seed: int, device, summary: str) -> None:
        """What made the run: resolved configuration, environment, and the model summary."""
        if self.writes:
            save_config(cfg, self.path / "config.yaml", seeds=[seed])
            atomic_write_json(self.path / "environment.json", environment_record(device, seed))
            atomic_write_text(self.path / "model.txt", summary + "\n")

    def epoch_end(self, checkpoint: dict | None, history: list[dict]) -> None:
        """The epoch's checkpoint (None: a tune trial keeps none) and metrics.csv (the trackers, a callback
        of their own, follow: training/callbacks.py's Trackers)."""
        if self.writes:
            if checkpoint is not None:
                save_checkpoint(self.checkpoint_path, checkpoint)
            write_metrics(self.path / "metrics.csv", history)

    def metrics(self, history: list[dict]) -> None:
        if self.writes:
            write_metrics(self.path / "metrics.csv", history)

    def interpretation(self, logits, labels, images, class_names: list[str], *, title: str,
                       top_k: int = 12) -> None:
        """confusion_matrix.csv/.png, per_class.csv, most_confused.csv and top_losses.png of the test split."""
        if self.writes:
            write_interpretation(self.path, logits, labels, images, class_names, title=title, top_k=top_k)

    def multilabel_interpretation(self, logits, targets, images, class_names: list[str], thresholds, *,
                                  title: str, top_k: int = 12) -> None:
        """per_class.csv (AP, precision, recall, F1, threshold), test_predictions.csv (every class's probability),
        pr_curves.png, label_counts.png and top_losses.png of a multi-label test split."""
        if self.writes:
            write_multilabel_interpretation(self.path, logits, targets, images, class_names, thresholds,
                                            title=title, top_k=top_k)

    def trust(self, curves: dict, *, title: str) -> None:
        """trust.json: the test split's reliability bins, coverage and risk–coverage curve (the report draws them)."""
        if self.writes:
            atomic_write_json(self.path / layout.TRUST_FILE, {"title": title, **curves})

    def finish(self, model, *, record: dict, results: dict, title: str) -> None:
        """The trained weights (with what using them needs), the results and the curves (then the
        caller writes the interpretation and marks the run finished)."""
        if self.writes:
            save_weights(self.path / layout.WEIGHTS_FILE, model, record)
            atomic_write_json(self.path / layout.RESULTS_FILE, results)
            lead = "map" if "test_map" in results else "acc"  # a multi-label run's curves show mAP
            plot_learning_curves(self.path / "metrics.csv", self.path / "curves.png", title=title,
                                 test={"epoch": results["kept_epoch"], "loss": results["test_loss"],
                                       lead: results[f"test_{lead}"]})

    def finish_validation_only(self, *, title: str, epoch: int) -> None:
        """A run handed no test split (a tune trial): its curves, and the state finished."""
        if self.writes:
            plot_learning_curves(self.path / "metrics.csv", self.path / "curves.png", title=title)
            self.status("finished", epoch=epoch)

    def unfinish(self, epoch: int) -> None:
        """Interrupted while writing the last files: no results.json, so a resume tests again from the checkpoint."""
        if self.writes:
            (self.path / layout.RESULTS_FILE).unlink(missing_ok=True)
            self.status("interrupted", epoch=epoch)


def write_interpretation(folder: Path, logits, labels, images, class_names: list[str], *, title: str,
                         top_k: int = 12) -> None:
    """The interpretation files of one run from its test logits (torch, CPU) and labels."""
    import torch
    import torch.nn.functional as F

    predictions = logits.argmax(1)
    matrix = confusion(labels.numpy(), predictions.numpy(), len(class_names))
    write_confusion_csv(folder / "confusion_matrix.csv", matrix, class_names)
    plot_confusion(folder / "confusion_matrix.png", matrix, class_names, title=f"{title}: test confusion (row-normalised)")
    write_rows_csv(folder / "per_class.csv", per_class(matrix, class_names))
    write_rows_csv(folder / "most_confused.csv", most_confused(matrix, class_names), ["true", "predicted", "count"])
    # every test image's prediction, in the test split's order: what the figures of results.json came from
    confidence = torch.softmax(logits, 1).max(1).values.numpy()
    write_rows_csv(folder / "test_predictions.csv", [
        {"test_index": i, "true": class_names[int(t)], "predicted": class_names[int(p)], "probability": float(c)}
        for i, (t, p, c) in enumerate(zip(labels.tolist(), predictions.tolist(), confidence))],
        ["test_index", "true", "predicted", "probability"])
    losses = F.cross_entropy(logits, labels, reduction="none").numpy()
    worst = top_losses(losses, min(top_k, len(losses)))
    pixels, _ = next(iter(images.subset(torch.as_tensor(worst)).batches(len(worst))))
    probabilities = torch.softmax(logits[worst], 1).max(1).values.numpy()
    write_rows_csv(folder / "top_losses.csv", [
        {"test_index": int(i), "true": class_names[int(labels[i])], "predicted": class_names[int(predictions[i])],
         "probability": float(p), "loss": float(losses[i])} for i, p in zip(worst, probabilities)])
    plot_top_losses(folder / "top_losses.png", pixels.permute(0, 2, 3, 1).cpu().numpy(),
                    [class_names[int(labels[i])] for i in worst], [class_names[int(predictions[i])] for i in worst],
                    probabilities, losses[worst], title=f"{title}: the {len(worst)} test images with the highest loss")


def write_multilabel_interpretation(folder: Path, logits, targets, images, class_names: list[str], thresholds, *,
                                    title: str, top_k: int = 12, curves_each: int = 3) -> None:
    """The interpretation files of a multi-label run from its test logits and 0/1 targets (torch, CPU)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cnnlab.multilabel import per_class_table, precision_recall_curve
    from cnnlab.reporting.multilabel import plot_label_counts, plot_pr_curves

    probabilities = torch.sigmoid(logits.float()).numpy()
    truth = targets.numpy() > 0.5
    predicted = probabilities >= np.asarray(thresholds)[None, :]
    table = per_class_table(probabilities, truth, thresholds, class_names)
    write_rows_csv(folder / "per_class.csv", table)

    def names(row) -> str:
        return ";".join(class_names[c] for c in np.flatnonzero(row))

    # every test image: its labels, the predicted set and each class's probability (what results.json came from)
    write_rows_csv(folder / "test_predictions.csv", [
        {"test_index": i, "true": names(truth[i]), "predicted": names(predicted[i]),
         **{f"p_{name}": float(probabilities[i, c]) for c, name in enumerate(class_names)}}
        for i in range(len(probabilities))])
    ranked = sorted((row for row in table if row["ap"] is not None), key=lambda row: -row["ap"])
    picked = [(row, "best") for row in ranked[:curves_each]] + \
             [(row, "worst") for row in ranked[curves_each:][-curves_each:]]
    curves = []
    for row, group in picked:
        recall, precision = precision_recall_curve(probabilities, truth, class_names.index(row["class"]))
        curves.append({"class": row["class"], "recall": recall, "precision": precision, "ap": row["ap"],
                       "group": group})
    if curves:
        plot_pr_curves(folder / "pr_curves.png", curves, title=f"{title}: precision–recall, best and worst classes")
    plot_label_counts(folder / "label_counts.png", truth.sum(1), predicted.sum(1),
                      title=f"{title}: labels an image (test)")
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").sum(1).numpy()
    worst = top_losses(losses, min(top_k, len(losses)))
    if len(worst):
        pixels, _ = next(iter(images.subset(torch.as_tensor(worst)).batches(len(worst))))
        write_rows_csv(folder / "top_losses.csv", [
            {"test_index": int(i), "true": names(truth[i]), "predicted": names(predicted[i]), "loss": float(losses[i])}
            for i in worst])
        plot_top_losses(folder / "top_losses.png", pixels.permute(0, 2, 3, 1).cpu().numpy(),
                        [names(truth[i]) or "(none)" for i in worst], [names(predicted[i]) or "(none)" for i in worst],
                        np.array([float(probabilities[i][predicted[i]].mean()) if predicted[i].any() else 0.0
                                  for i in worst]), losses[worst],
                        title=f"{title}: the {len(worst)} test images with the highest loss (probability: mean of "
                              "the predicted labels')")
