"""Mixup and CutMix (`train.mixup: α`, `train.cutmix: α`): each training batch mixed with a shuffled copy of itself.

Mixup (Zhang et al. 2018) blends two images, x = λ·a + (1 − λ)·b; CutMix (Yun et al. 2019)
pastes a box of b into a covering the fraction 1 − λ of its area; λ ~ Beta(α, α). The loss is
λ·loss(a's label) + (1 − λ)·loss(b's label), so label smoothing combines with it. With both
set, each batch takes one of the two with equal odds, as timm's `Mixup` does; `train.mix_prob`
mixes only that share of the batches (a shorter schedule fits better with some clean ones).

The draws come from the epoch's generator, the one that orders the batches and augments the
images, so a run is repeatable and a resumed run exact. λ is drawn by numpy (torch's Beta
takes no generator) from a seed the generator gives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch



@dataclass
class MixedBatch:
    images: torch.Tensor
    partner: torch.Tensor  # the label of the image mixed into each one
    weight: float  # λ: the share of each image's own label


class BatchMixer:
    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, prob: float = 1.0):
        self.mixup, self.cutmix, self.prob = mixup, cutmix, prob

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> MixedBatch | None:
        """The mixed batch, or None for a batch left as it is (`prob` < 1)."""
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
        if rng.random() >= self.prob:
            return None
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        weight = float(rng.beta(alpha, alpha))
        order = torch.randperm(len(x), generator=generator).to(x.device)
        if not use_cutmix:
            return MixedBatch(x.lerp(x[order], 1.0 - weight), labels[order], weight)
        if x.dim() != 4:  # training/checks.py refuses CutMix on cached features before a run starts
            raise ValueError(f"CutMix needs a batch of images (N, C, H, W), got a tensor of shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        # a box of area (1 − λ) of the image, centred anywhere, clipped at the edges (as the paper does)
        ratio = np.sqrt(1.0 - weight)
        box_h, box_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
        left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x[order, ..., top:bottom, left:right]  # only the box is gathered
        kept = 1.0 - (bottom - top) * (right - left) / (height * width)  # λ of the box as clipped
        return MixedBatch(mixed, labels[order], kept)


def mixed_loss(loss_fn, logits: torch.Tensor, labels: torch.Tensor, batch: MixedBatch | None) -> torch.Tensor:
    if batch is None:
        return loss_fn(logits, labels)
    return batch.weight * loss_fn(logits, labels) + (1.0 - batch.weight) * loss_fn(logits, batch.partner)


def mixed_correct(predicted: torch.Tensor, labels: torch.Tensor, batch: MixedBatch | None) -> torch.Tensor:
    """Right answers, each mixed image counting λ for its own label and 1 − λ for its partner's."""
    if batch is None:
        return (predicted == labels).sum()
    return batch.weight * (predicted == labels).sum() + (1.0 - batch.weight) * (predicted == batch.partner).sum()
