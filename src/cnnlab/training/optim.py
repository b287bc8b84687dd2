"""Optimizers and learning-rate schedules by name."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from cnnlab.config import OptimizerConfig, TrainConfig


def build_optimizer(params: Iterable, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """`params` may be tensors or param-group dicts (each may carry its own `lr`)."""
    params = list(params)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"Invalid optimizer {cfg.name}. Only adam, adamw and sgd are supported.")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                    epochs: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step multiplier: linear warm-up over `warmup_epochs`, then constant or cosine."""
    total = max(1, (epochs or cfg.epochs) * steps_per_epoch)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    cosine = cfg.schedule == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
