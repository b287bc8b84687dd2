"""Optimizers and learning-rate schedules by name."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from cnnlab.config import OptimizerConfig, TrainConfig


def build_optimizer(params: Iterable, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """`params` may be tensors or param-group dicts (each may carry its own `lr`).

    The fused implementation (one kernel for every tensor) where this torch has it for the
    parameters' device: on the CPU PyTorch otherwise loops over the tensors one by one in
    Python (BaseNet, 2 cores: 9.9 ms a step fused, 10.8 foreach, 11.4 per tensor).
    """
    params = list(params)
    if cfg.name == "adam":
        return _fused_if_possible(torch.optim.Adam, params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                  weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return _fused_if_possible(torch.optim.AdamW, params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                  weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return _fused_if_possible(torch.optim.SGD, params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                  weight_decay=cfg.weight_decay)
    raise ValueError(f"Invalid optimizer {cfg.name}. Only adam, adamw and sgd are supported.")


def _fused_if_possible(optimizer: type, params: list, **kwargs) -> torch.optim.Optimizer:
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    devices = {p.device.type for p in tensors}
    if len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in tensors):
        try:
            return optimizer(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # an older torch without it for this device
            pass
    return optimizer(params, **kwargs)


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
