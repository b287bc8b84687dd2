"""Mini-batches sliced from one uint8 tensor that already lives on the training device."""
from __future__ import annotations

from typing import Iterator

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (indices, augmentation parameters) on `device`, without stalling the host.

    A copy from ordinary (pageable) host memory to a CUDA device first waits for the GPU to
    finish its queued work, so a few such copies a step leave the GPU idle while Python
    launches the next step. From pinned memory the copy is queued like a kernel; PyTorch's
    pinned-memory cache keeps the buffer until the copy has run.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling RNG of one epoch, derived from (seed, epoch) alone.

    Deriving it rather than carrying it forward makes a resumed run draw exactly the
    batches an uninterrupted run would have drawn.
    """
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def batch_indices(n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
                  shard: tuple[int, int] = (0, 1), order: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index tensors of this process's part of each global batch (the last may be smaller, as in Keras).

    `order` (a sampler's draw for the epoch, training/imbalance.py) replaces the permutation.

    With `shard=(rank, world)`, every process draws the same permutation and takes positions
    rank, rank+world, ... of each global batch; a final batch too small to give every process
    an image is dropped on all of them, so they always take the same number of steps.
    """
    rank, world = shard
    if order is None:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
    if world > 1:
        batches = [b[rank::world] for b in batches if len(b) >= world]
    return batches


def iterate_batches(data, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1),
                    order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches sliced from `data.images` and `data.labels`."""
    if not shuffle and shard[1] == 1 and order is None:  # plain slices: no index tensor needed
        for start in range(0, len(data), batch_size):
            yield data.images[start:start + batch_size], data.labels[start:start + batch_size]
        return
    for idx in batch_indices(len(data), batch_size, shuffle=shuffle, generator=generator, shard=shard, order=order):
        idx = to_device(idx, data.images.device)
        yield data.images[idx], data.labels[idx]


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
