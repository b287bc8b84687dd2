"""`cnnlab ood`: how well a trained model's 'unknown' rule tells its own classes from images it never saw.

In-distribution: the run's test split (read again from its config.yaml, as `cnnlab interpret` does), which
fitted nothing. Out-of-distribution: the images the user names. Both scores are measured (msp and energy,
trust/rejection.py), whatever rule the run recorded, so the choice between them rests on figures: AUROC,
FPR at 95 % TPR (on the test split's own 95 % threshold), and what the run's rule — the threshold chosen on the
validation split for `reject_rate` — accepts of each side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.config import REJECT_SCORES
from cnnlab.inference.predict import predict
from cnnlab.inference.trained import TrainedModel, run_data
from cnnlab.reporting.tables import pct, render_table
from cnnlab.trust.rejection import ood_figures


def in_distribution_logits(trained: TrainedModel, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's test split's raw logits and labels, as the run tested them (its TTA views)."""
    return split_logits(trained, run_data(trained).test, batch_size)


def split_logits(trained: TrainedModel, source, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits and labels of every image of a split (an ImageSource), in its order."""
    logits, labels = [], []
    for images, batch_labels in source.batches(batch_size):
        logits.append(trained.batch_logits(images).cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(logits), torch.cat(labels)


def measure_ood(trained: TrainedModel, images: list[Path], *, reject_rate: float = 0.05, batch_size: int = 64,
                workers: int | None = None, progress: bool = True) -> dict:
    trust = trained.require_trust("cnnlab ood")
    # the foreign images first: a wrong path fails before the test split is read
    predictions, errors = predict([trained], images, batch_size=batch_size, workers=workers, progress=progress)
    inside, labels = in_distribution_logits(trained, batch_size)
    outside = torch.stack([p.logits for p in predictions])
    rows = {}
    for kind in REJECT_SCORES:
        a, b = trust.scores(inside, kind), trust.scores(outside, kind)
        cut = trust.threshold(reject_rate, kind)
        rows[kind] = {**ood_figures(a, b), "rule_threshold": cut, "rule_in_accepted": float((a >= cut).mean()),
                      "rule_out_accepted": float((b >= cut).mean())}
    correct = (inside.argmax(1) == labels).numpy()
    return {"model": str(trained.source), "engine": trained.engine, "reject_rate": reject_rate,
            "recorded_rule": trust.reject_score, "temperature": trust.temperature,
            "in_images": int(len(labels)), "in_accuracy": float(np.mean(correct)),
            "out_images": int(len(predictions)), "out_sources": [str(p) for p in images],
            "unreadable": len(errors), "scores": rows}


def ood_table(figures: dict) -> str:
    header = ["score", "AUROC", "FPR at 95 % TPR", f"rule (reject {figures['reject_rate']:g} of validation): "
                                                      "test accepted", "foreign accepted"]
    rows = [[kind + (" (the run's rule)" if kind == figures["recorded_rule"] else ""), f"{r['auroc']:.4f}",
             pct(r["fpr_at_95_tpr"]), pct(r["rule_in_accepted"]), pct(r["rule_out_accepted"])]
            for kind, r in figures["scores"].items()]
    return (render_table(header, rows) + f"\n{figures['in_images']} test images of the run's classes (accuracy "
            f"{pct(figures['in_accuracy'])}) against {figures['out_images']} foreign images")
