"""The task a Learner is built for: one class an image (`SingleLabel`) or several (`MultiLabel`).

The task is one of the Learner's parts, like the runtime: it says what the loss is, what a right
answer is in a training batch, and which figures validation and test report. What is fitted on the
validation split after training (the trust record, or each class's threshold) and how a split is
measured differ enough that the Learner calls the matching function here for a multi-label task.

    task = task_for(cfg, splits)           # from the data (splits.task), checked against cfg.task
    task.train_loss(cfg, splits, device)   # ce | bce | asl, class weights, label smoothing
    task.correct(logits, labels, mixed)    # right answers in a training batch (λ-weighted when mixed)
    task.scores, task.primary              # the figures after val_ / test_, and the one a line leads with
    multilabel_split_figures(logits, targets, loss_fn, thresholds)   # a multi-label split's loss and figures

Multi-label targets are float32 0/1 (N, classes) matrices; an epoch's figures are measured at 0.5,
the test split's at the thresholds chosen on validation (multilabel/thresholds.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.config import TASK_MONITORS, ExperimentConfig
from cnnlab.data.images import DataSplits
from cnnlab.errors import ConfigError
from cnnlab.multilabel import (EPOCH_SCORES, AsymmetricLoss, MultiLabelBCE, fit_thresholds, multilabel_figures,
                               positive_weights)
from cnnlab.training.imbalance import class_counts, class_weights
from cnnlab.training.mixing import MixedBatch, mixed_correct
from cnnlab.training.scores import SCORES


def task_problems(cfg: ExperimentConfig, task: str) -> list[tuple[str, str]]:
    """(key, what is wrong) for each setting of `cfg` that `task` cannot honour."""
    tc, problems = cfg.train, []
    if task == "multilabel":
        if tc.loss == "ce":
            problems.append(("train.loss", "ce (softmax cross-entropy) picks one class an image; multi-label data "
                                           "needs bce or asl (or auto)"))
        if cfg.data.sampler != "uniform":
            problems.append(("data.sampler", f"{cfg.data.sampler} draws by class, which an image of several labels "
                                             "does not have; use uniform (and train.class_weights or train.loss: asl "
                                             "for rare labels)"))
    elif tc.loss in ("bce", "asl"):
        problems.append(("train.loss", f"{tc.loss} is a multi-label loss; one class an image trains with ce (or auto)"))
    allowed = TASK_MONITORS["multilabel" if task == "multilabel" else "single"]
    for key, monitor in (("train.keep_best", tc.keep_best), ("train.early_stopping.monitor",
                                                             tc.early_stopping.monitor)):
        if monitor != "off" and monitor not in allowed:
            problems.append((key, f"{monitor} is not measured for {'multi-label' if task == 'multilabel' else 'single-label'} "
                                  f"data; expected one of {', '.join(allowed)}"))
    return problems


class SingleLabel:
    """One class an image: softmax cross-entropy, accuracy / balanced accuracy / macro-F1 from a confusion matrix."""

    scores = SCORES
    primary = "acc"  # the figure an epoch line and a table lead with

    def train_loss(self, cfg: ExperimentConfig, splits: DataSplits, device) -> nn.Module:
        tc = cfg.train
        weights = class_weights(class_counts(splits.train.labels, splits.num_classes), tc.class_weights,
                                tc.class_weights_beta)
        return nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None,
                                   label_smoothing=tc.label_smoothing)

    def eval_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def correct(self, logits: torch.Tensor, labels: torch.Tensor, mixed: MixedBatch | None) -> torch.Tensor:
        """Right answers, each mixed image counting λ for its own label and 1 − λ for its partner's."""
        return mixed_correct(logits.argmax(1), labels, mixed)


class MultiLabel:
    """Several labels an image (possibly none): sigmoid outputs, BCE or the asymmetric loss, mAP and F1."""

    scores = EPOCH_SCORES
    primary = "map"

    def train_loss(self, cfg: ExperimentConfig, splits: DataSplits, device) -> nn.Module:
        tc = cfg.train
        labels = splits.train.labels
        weights = positive_weights((labels > 0.5).sum(0).cpu(), len(labels), tc.class_weights, tc.class_weights_beta)
        weights = weights.to(device) if weights is not None else None
        if tc.loss == "asl":
            return AsymmetricLoss(tc.asl_gamma_neg, tc.asl_gamma_pos, tc.asl_clip,
                                  label_smoothing=tc.label_smoothing, pos_weight=weights)
        return MultiLabelBCE(tc.label_smoothing, pos_weight=weights)

    def eval_loss(self) -> nn.Module:
        return MultiLabelBCE()

    def correct(self, logits: torch.Tensor, labels: torch.Tensor, mixed: MixedBatch | None) -> torch.Tensor:
        """Each image's share of right yes/no decisions at 0.5 (1 − its Hamming loss), summed over the batch;
        a mixed image is right by its mixed target (λ·own + (1 − λ)·partner's) rounded."""
        targets = labels if mixed is None else mixed.weight * labels + (1.0 - mixed.weight) * mixed.partner
        return ((logits > 0) == (targets > 0.5)).float().mean(1).sum()


Task = SingleLabel | MultiLabel


def task_for(cfg: ExperimentConfig, splits: DataSplits) -> Task:
    """The task of `splits` (what the data holds), after checking `cfg` can train it."""
    if cfg.task not in ("auto", splits.task):
        found = "several labels an image" if splits.multilabel else "one class an image"
        raise ConfigError(f"task: the experiment is {cfg.task}, but the data ({splits.description}) holds {found}; "
                          f"set task: {splits.task} (or auto)")
    problems = task_problems(cfg, splits.task)
    if problems:
        key, message = problems[0]
        raise ConfigError(f"key '{key}': {message}")
    return MultiLabel() if splits.multilabel else SingleLabel()


def multilabel_split_figures(logits: torch.Tensor, targets: torch.Tensor, loss_fn: nn.Module,
                             thresholds=0.5) -> dict:
    """A multi-label split's loss and figures (multilabel/metrics.py) at `thresholds` (0.5 each epoch, the
    validation-chosen ones on the test split). mAP needs every image's scores at once, so under torchrun each
    process measures the whole split; the figures are equal."""
    loss = float(loss_fn(logits, targets)) if len(targets) else 0.0
    return {"loss": loss, **multilabel_figures(torch.sigmoid(logits).numpy(), targets.numpy(), thresholds)}


def fit_multilabel_thresholds(logits: torch.Tensor, labels: torch.Tensor, mode: str) -> np.ndarray:
    """Each class's threshold on the validation split's sigmoid probabilities (multilabel/thresholds.py)."""
    return fit_thresholds(torch.sigmoid(logits.float()).numpy(), labels.numpy(), mode)
