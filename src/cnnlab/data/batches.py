"""Mini-batches sliced from one uint8 tensor that already lives on the training device."""
from __future__ import annotations

from typing import Iterator

import torch

from cnnlab.data.images import ImageSet


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling RNG of one epoch, derived from (seed, epoch) alone.

    Deriving it rather than carrying it forward makes a resumed run draw exactly the
    batches an uninterrupted run would have drawn.
    """
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def iterate_batches(data: ImageSet, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches; the last batch may be smaller (as in Keras)."""
    n = len(data)
    order = torch.randperm(n, generator=generator).to(data.images.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield data.images[start:start + batch_size], data.labels[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield data.images[idx], data.labels[idx]


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
