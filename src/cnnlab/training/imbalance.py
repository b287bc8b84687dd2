"""Imbalanced training splits: class weights for the loss, class-aware sampling, and a note when it matters.

Two standard remedies, each one key (`train.class_weights`, `data.sampler`):

- class weights in the cross-entropy: `balanced` is inverse frequency, N / (C · n_c)
  (scikit-learn's `compute_class_weight("balanced")`); `effective` is the "effective number of
  samples" of Cui et al. (CVPR 2019): (1 − β) / (1 − β^n_c), scaled to sum to C, with β
  `train.class_weights_beta` (0.999 and 0.9999 in their paper; β → 0 weighs all classes alike,
  β → 1 tends to inverse frequency);
- re-sampling: every epoch draws len(train) images with replacement, each class with
  probability ∝ 1 (`balanced`) or ∝ √n_c (`sqrt`, the square-root sampling of Mahajan et al.
  2018) instead of ∝ n_c (`uniform`: a permutation, every image once).

The draw comes from the epoch's generator (data/batches.py: derived from seed and epoch), so
a resumed run draws the same images, and every torchrun process draws the same order and
takes its own positions of each global batch (disjoint shards). Cached features carry the
same labels as their images, so a head trained on them is sampled alike.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from cnnlab.config import CLASS_WEIGHTS, SAMPLERS

# max/min training images per class above which a run says its data is imbalanced
IMBALANCE_RATIO = 3.0


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Images of each class (multi-label 0/1 targets: the images each label is on)."""
    if labels.dim() == 2:
        return (labels.cpu() > 0.5).sum(0).long()
    return torch.bincount(labels.cpu().long(), minlength=num_classes)


def class_weights(counts: torch.Tensor, mode: str, beta: float = 0.999) -> torch.Tensor | None:
    """float32 weight per class for the loss (None for `none`); a class without images weighs 0."""
    if mode == "none":
        return None
    n = counts.double()
    present = n > 0
    if mode == "balanced":
        weights = torch.where(present, n.sum() / (int(present.sum()) * n.clamp(min=1)), torch.zeros_like(n))
    elif mode == "effective":
        effective = (1 - beta ** n) / (1 - beta)  # the expected number of distinct samples
        weights = torch.where(present, 1 / effective.clamp(min=1e-12), torch.zeros_like(n))
        weights = weights * int(present.sum()) / weights.sum()
    else:
        raise ValueError(f"class weights: expected one of {', '.join(CLASS_WEIGHTS)}, got {mode!r}")
    return weights.float()


def sampling_weights(labels: torch.Tensor, mode: str, num_classes: int) -> torch.Tensor:
    """Each image's probability of being drawn under `mode` (sums to 1)."""
    counts = class_counts(labels, num_classes).double()
    per_class = {"balanced": torch.ones_like(counts), "sqrt": counts.sqrt(), "uniform": counts}[mode]
    per_class = torch.where(counts > 0, per_class / per_class.sum(), torch.zeros_like(counts))
    per_image = per_class[labels.cpu().long()] / counts[labels.cpu().long()]
    return per_image / per_image.sum()


def epoch_order(labels: torch.Tensor, mode: str, num_classes: int, generator: torch.Generator
                ) -> torch.Tensor | None:
    """This epoch's order of training images under `mode`; None for `uniform` (batches.py then draws
    its permutation, exactly as before samplers existed)."""
    if mode == "uniform":
        return None
    if mode not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {mode!r}")
    weights = sampling_weights(labels, mode, num_classes)
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


def imbalance_note(labels: torch.Tensor, class_names: Sequence[str], *, smallest: int = 5) -> str | None:
    """One line when the training split's classes differ by more than IMBALANCE_RATIO, naming the smallest."""
    counts = class_counts(labels, len(class_names))
    present = counts[counts > 0]
    if len(present) < 2 or float(present.max()) <= IMBALANCE_RATIO * float(present.min()):
        return None
    order = sorted(range(len(class_names)), key=lambda c: (int(counts[c]), c))[:smallest]
    rare = ", ".join(f"{class_names[c]} ({int(counts[c])})" for c in order)
    return (f"the training split is imbalanced: {int(present.max())} images in the largest class, "
            f"{int(present.min())} in the smallest ({float(present.max()) / float(present.min()):.1f}×); smallest: "
            f"{rare}. Watch balanced accuracy and macro-F1; train.class_weights and data.sampler can help")
