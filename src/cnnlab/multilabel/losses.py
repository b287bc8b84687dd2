"""Losses for multi-hot targets: binary cross-entropy with logits (default) and the asymmetric loss.

- `MultiLabelBCE`: sigmoid + BCE per image×class, averaged; `label_smoothing` ε moves each target
  toward ½ (y(1 − ε) + ε/2: the two-class form of smoothing, as each class is its own yes/no);
  `pos_weight` per class (train.class_weights: see `positive_weights`).
- `AsymmetricLoss` (Ridnik et al., ICCV 2021, "Asymmetric Loss For Multi-Label Classification"):
  focusing γ₊ on positives and γ₋ on negatives (γ₋ > γ₊ lowers the weight of the many easy
  negatives), and the probability margin `clip` m that shifts each negative's probability down,
  p_m = max(p − m, 0), discarding very easy negatives entirely:
      L₊ = (1 − p)^γ₊ · log(p),   L₋ = p_m^γ₋ · log(1 − p_m),   loss = −Σ (y L₊ + (1 − y) L₋)
  summed over classes, averaged over images (the paper sums; the mean over images keeps the
  learning rate meaningful across batch sizes).

Both are linear in the target, so mixup / CutMix's λ·loss(a) + (1 − λ)·loss(b) equals the loss of
the mixed multi-hot target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def smoothed(targets: torch.Tensor, label_smoothing: float, dtype: torch.dtype) -> torch.Tensor:
    """0/1 targets (or mixed ones) moved toward ½ by ε/2 each: y(1 − ε) + ε/2."""
    targets = targets.to(dtype)
    return targets * (1 - label_smoothing) + label_smoothing / 2 if label_smoothing > 0 else targets


class MultiLabelBCE(nn.Module):
    def __init__(self, label_smoothing: float = 0.0, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, smoothed(targets, self.label_smoothing, logits.dtype),
                                                  pos_weight=self.pos_weight)


class AsymmetricLoss(nn.Module):
    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 label_smoothing: float = 0.0, pos_weight: torch.Tensor | None = None, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.label_smoothing = label_smoothing
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = smoothed(targets, self.label_smoothing, logits.dtype)
        p = torch.sigmoid(logits)
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        positive = torch.log(p.clamp(min=self.eps)) * (1 - p).pow(self.gamma_pos)
        negative = torch.log((1 - p_neg).clamp(min=self.eps)) * p_neg.pow(self.gamma_neg)
        if self.pos_weight is not None:
            positive = positive * self.pos_weight
        return -(targets * positive + (1 - targets) * negative).sum(1).mean()


def positive_weights(positives: torch.Tensor, total: int, mode: str, beta: float = 0.999) -> torch.Tensor | None:
    """train.class_weights for multi-label: a weight on each class's positive term (BCE's `pos_weight`).

    `balanced`: negatives / positives of the class in the training split (its positives then weigh
    as much as its negatives; torch's documented use of pos_weight); `effective`: Cui et al.'s
    effective-number weight of the class's positives, (1 − β) / (1 − β^n), scaled to mean 1 over the
    classes that have one. A class without a positive weighs 1 (nothing to up-weigh).
    """
    if mode == "none":
        return None
    n = positives.double()
    present = n > 0
    if mode == "balanced":
        weights = torch.where(present, (total - n) / n.clamp(min=1), torch.ones_like(n))
    elif mode == "effective":
        effective = (1 - beta ** n) / (1 - beta)
        weights = torch.where(present, 1 / effective.clamp(min=1e-12), torch.zeros_like(n))
        weights = torch.where(present, weights * int(present.sum()) / weights.sum(), torch.ones_like(n))
    else:
        raise ValueError(f"class weights: expected none, balanced or effective, got {mode!r}")
    return weights.float()
