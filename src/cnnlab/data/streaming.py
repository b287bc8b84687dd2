"""Image sets streamed from disk: worker processes decode and resize, the device does the rest.

Workers return uint8 tensors of one size (decode + resize only); augmentation and
normalisation then run batched on the training device (preprocess.py), exactly as for
in-memory sets. `cache_in_memory` decodes everything once into a uint8 ImageSet.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnlab.config import INTERPOLATIONS
from cnnlab.data.batches import batch_indices
from cnnlab.data.imagefolder import MAX_PIXELS, load_rgb
from cnnlab.data.images import ImageSet
from cnnlab.errors import DataError

RESIZE_MODES = ("stretch", "crop")
# The resampling filters a weights' config may name (timm's and torchvision's names), as PIL's.
FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}
assert tuple(FILTERS) == INTERPOLATIONS, "resampling filters out of step with config.INTERPOLATIONS"


def resize_image(image: Image.Image, size: int, mode: str, crop_ratio: float = 0.875,
                 interpolation: str = "bilinear") -> Image.Image:
    """`stretch`: straight to size×size (the lab's, aspect not kept); `crop`: shorter side to
    size/crop_ratio (rounded down, as timm's eval transform does), then the centre size×size
    (torchvision's and timm's evaluation transform). `interpolation` names the filter."""
    resample = FILTERS[interpolation]
    if mode == "stretch":
        return image.resize((size, size), resample)
    short = math.floor(size / crop_ratio + 1e-6)  # 224 / (224 / 232) is 231.999...: still 232
    w, h = image.size
    scale = short / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_image(source, size: int, mode: str, crop_ratio: float = 0.875, interpolation: str = "bilinear", *,
                 name: str | None = None, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """An image file (or an upload's bytes as a file object) → uint8 CHW tensor at size×size, decoded and
    resized exactly as training streamed its images (so a served upload predicts as `cnnlab predict`)."""
    # crop: the shorter side becomes size / crop_ratio, so both sides must keep at least that many pixels
    needed = size if mode == "stretch" else math.floor(size / crop_ratio + 1e-6)
    image = resize_image(load_rgb(source, name=name, max_pixels=max_pixels, at_least=(needed, needed)), size, mode,
                         crop_ratio, interpolation)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy())


def open_item(item):
    """What Pillow opens for one listed image: a file path as it is, or a dataset row's file object (hub.HubImage)."""
    return item if isinstance(item, (str, os.PathLike)) else item.open()


def item_name(item) -> str | None:
    """The name errors give a listed image: None for a path (its own), the row's name otherwise."""
    return None if isinstance(item, (str, os.PathLike)) else item.name


class DecodeImages(Dataset):
    """Image files (or dataset rows) → (uint8 CHW tensor, index, None), or (None, index, message) for one that
    does not decode."""

    def __init__(self, paths: list[Path], size: int, mode: str, crop_ratio: float, interpolation: str = "bilinear"):
        self.paths, self.size, self.mode, self.crop_ratio = paths, size, mode, crop_ratio
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            item = self.paths[index]
            image = decode_image(open_item(item), self.size, self.mode, self.crop_ratio, self.interpolation,
                                 name=item_name(item))
        except DataError as exc:  # carried to the main process, which raises it cleanly
            return None, index, str(exc)
        return image, index, None


def collate_decoded(items):
    """DecodeImages items → (stacked images or None, indices of those images, [(index, message)] of failures)."""
    good = [(x, i) for x, i, err in items if err is None]
    bad = [(i, err) for _, i, err in items if err is not None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


# How decoding workers start: "fork" (the DataLoader's default on Linux), unless this process has loaded
# a runtime whose thread pool fork() is unsafe under — OpenVINO's oneTBB: a process that had run OpenVINO
# crashed (SIGSEGV) now and then when it later forked. Then a forkserver's children, forked from a clean
# server process. Read from sys.modules (public), so nothing patches this module from outside.
FORK_UNSAFE_RUNTIMES = ("openvino",)


# What the forkserver imports once, before it forks any worker. Without it each worker imports torch on its
# own: every loader (one per split and epoch, as workers do not persist) paid ~3 s on a 2-core machine;
# with it only the server's start does (benchmarks/worker_start.py).
FORKSERVER_PRELOAD = ["torch", __name__]


def worker_context() -> str | None:
    if not any(name in sys.modules for name in FORK_UNSAFE_RUNTIMES):
        return None
    multiprocessing.set_forkserver_preload(FORKSERVER_PRELOAD)  # read when the server starts; later calls no-op
    return "forkserver"


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class StreamingSet:
    paths: list[Path]
    labels: torch.Tensor  # int64 (N,), on the CPU
    size: int = 224
    resize: str = "stretch"
    crop_ratio: float = 0.875
    interpolation: str = "bilinear"
    num_workers: int = field(default_factory=default_workers)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def subset(self, index) -> "StreamingSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, paths=[self.paths[i] for i in index.tolist()], labels=self.labels[index])

    def to(self, device: torch.device) -> "StreamingSet":
        return replace(self, device=torch.device(device))

    def _loader(self, batches: list[list[int]]) -> DataLoader:
        # The batches come drawn (batch_indices) and decoding draws nothing, so the loader needs no randomness;
        # but a DataLoader draws its workers' base seed from the global generator unless given its own. That
        # draw made a run differ by whether its frozen backbone's features were computed (a loader per split)
        # or read from the cache (none): the dropout of the next phase saw another generator state.
        return DataLoader(DecodeImages(self.paths, self.size, self.resize, self.crop_ratio, self.interpolation),
                          batch_sampler=batches, generator=torch.Generator().manual_seed(0),
                          num_workers=self.num_workers, collate_fn=collate_decoded,
                          multiprocessing_context=worker_context() if self.num_workers else None,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1), order: torch.Tensor | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = batch_indices(len(self), batch_size, shuffle=shuffle, generator=generator, shard=shard, order=order)
        for images, index, bad in self._loader([b.tolist() for b in plan]):
            if bad:
                raise DataError(bad[0][1] + (f" (and {len(bad) - 1} more in this batch)" if len(bad) > 1 else "")
                                + "; set data.skip_bad_images: true to leave broken images out")
            yield (images.to(self.device, non_blocking=True), self.labels[index].to(self.device, non_blocking=True))

    def find_bad_images(self, batch_size: int = 64) -> list[tuple[int, str]]:
        """Decode every image once; return (index, message) for each that fails."""
        bad = []
        for _, _, failed in self._loader([b.tolist() for b in batch_indices(len(self), batch_size, shuffle=False,
                                                                              generator=None)]):
            bad += failed
        return bad

    def cache_in_memory(self, batch_size: int = 64) -> ImageSet:
        """Decode and resize everything once into a uint8 ImageSet (N×3×size×size)."""
        images = torch.empty((len(self), 3, self.size, self.size), dtype=torch.uint8)
        start = 0
        for batch, _ in replace(self, device=torch.device("cpu")).batches(batch_size):
            images[start:start + len(batch)] = batch
            start += len(batch)
        return ImageSet(images, self.labels.clone())
