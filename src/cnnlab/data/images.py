"""In-memory image sets: one uint8 NCHW tensor plus int64 labels.

Small datasets (CIFAR-size) are held whole as uint8, a quarter of float32's memory, and
moved to the training device once; batches are then slices of one tensor, not images
pushed one by one through Python (what makes airbench fast).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from cnnlab.data.batches import iterate_batches
from cnnlab.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]  # (images or features, int64 labels or float32 multi-hot targets)


@runtime_checkable
class ImageSource(Protocol):
    """What the training loop, evaluation and feature extraction need from a dataset split.

    Three kinds implement it: `ImageSet` (uint8 images in memory), `StreamingSet` (decoded
    from disk by worker processes) and the `ImageSet` of cached backbone features.
    """

    labels: torch.Tensor

    def __len__(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    @property
    def device(self) -> torch.device: ...

    def subset(self, index) -> "ImageSource": ...

    def to(self, device: torch.device) -> "ImageSource": ...

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1), order: torch.Tensor | None = None) -> Iterator[Batch]:
        """Mini-batches in order, shuffled by `generator`, or in a sampler's `order` (indices, repeats allowed)."""
        ...


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64 (N,); multi-label: float32 0/1 (N, classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray | torch.Tensor) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index])

    def to(self, device: torch.device) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1), order: torch.Tensor | None = None):
        """(images, labels) mini-batches sliced from the tensors (see batches.py)."""
        return iterate_batches(self, batch_size, shuffle=shuffle, generator=generator, shard=shard, order=order)


@dataclass
class DataSplits:
    train: ImageSource
    val: ImageSource | None
    test: ImageSource
    class_names: list[str]
    description: str  # where the data came from, for the run record
    # How an image of another size is brought to the input size (recorded with the trained weights).
    resize: str = "stretch"
    crop_ratio: float = 0.875
    interpolation: str = "bilinear"
    # Class folders / CSV: the drawn split as rows (path, label, split), saved with the run as split.csv.
    split_rows: list[dict] | None = None
    source: str = ""  # the data source that read it (data/sources/), as detected for `auto`
    leaks: list | None = None  # test images with a near-exact duplicate in train/val (data/leaks.py); None: unchecked
    task: str = "single"  # multilabel: every split's labels are 0/1 (N, classes) float32 matrices

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.train.image_shape


def imageset_from_numpy(images: np.ndarray, labels: np.ndarray, *, source: str) -> ImageSet:
    """Validate NHWC uint8 images and integer labels, returning an NCHW ImageSet."""
    if images.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8 (N, H, W, C), got dtype {images.dtype}")
    if images.ndim == 3:  # grayscale N×H×W
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{source}: images must have shape (N, H, W, 3) or (N, H, W), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{source}: labels must have shape ({images.shape[0]},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return ImageSet(tensor, torch.from_numpy(labels.astype(np.int64)))


def check_labels(labels: torch.Tensor, num_classes: int, *, source: str) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"{source}: labels must lie in 0..{num_classes - 1}, "
                        f"found {int(labels.min())}..{int(labels.max())}")
