"""Batched preprocessing on the training device: scale, augment, normalise.

Keras's ImageDataGenerator transforms one image at a time in NumPy; here a whole batch
is warped with one `affine_grid`/`grid_sample` call, on the GPU when training there.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnlab.config import AugmentConfig, PreprocessConfig
from cnnlab.data.batches import to_device
from cnnlab.data.images import ImageSet
from cnnlab.errors import ConfigError

# Keras fill_mode → grid_sample padding_mode. Keras 'nearest' repeats the edge pixel.
_PADDING = {"nearest": "border", "zeros": "zeros", "reflect": "reflection"}


def fit_featurewise(train: ImageSet, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training images, in [0, 1] units.

    Fitted on the training split only: statistics from validation or test images would
    leak them into training (Keras `ImageDataGenerator(featurewise_center=True, ...).fit`).
    """
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, len(train), chunk):
        x = train.images[start:start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3)).cpu()
        total_sq += (x * x).sum(dim=(0, 2, 3)).cpu()
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    # Keras adds 1e-6 to the std before dividing (ImageDataGenerator.standardize).
    return mean.float(), (std + 1e-6).float()


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, shift, zoom and horizontal flip of a float NCHW batch.

    Parameters are drawn on the CPU from `generator` (so runs are repeatable on any
    device) and the warp is one bilinear `grid_sample`, like Keras's order-1 interpolation.
    """
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(cfg.rotation)
    # affine_grid works in normalised coordinates spanning [-1, 1]: a shift of a fraction f
    # of the width is 2f there.
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * cfg.shift * 2
    flip = torch.rand(n, generator=generator) < 0.5 if cfg.hflip else torch.zeros(n, dtype=torch.bool)
    cos, sin = torch.cos(angle), torch.sin(angle)
    sign = torch.where(flip, -1.0, 1.0)
    # theta maps output to input coordinates, so a factor below 1 magnifies (zooms in). Drawn only
    # when asked, so that configurations without zoom keep their random streams.
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * cfg.zoom if cfg.zoom > 0 else torch.ones(n)
    theta = torch.stack([torch.stack([cos * sign * scale, -sin * scale, shift[:, 0]], dim=1),
                         torch.stack([sin * sign * scale, cos * scale, shift[:, 1]], dim=1)], dim=1)
    theta = to_device(theta, x.device).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=_PADDING[cfg.fill], align_corners=False)


def check_crop_fits(pad: int, height: int, width: int) -> None:
    """Reflection padding needs fewer pixels than the image has."""
    if pad >= min(height, width):
        raise ConfigError(f"preprocess.augment.crop: {pad} pixels of padding is too much for {height}×{width} "
                          f"images; use less than {min(height, width)}")


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by `pad` pixels (reflection) and cut a random window of the original size.

    Whole-pixel translations, unlike `shift`'s bilinear warp, so no image is blurred.
    """
    n, _, height, width = x.shape
    check_crop_fits(pad, height, width)
    offsets = to_device(torch.randint(0, 2 * pad + 1, (n, 2), generator=generator), x.device)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = (offsets[:, 0:1] + torch.arange(height, device=x.device)).view(n, 1, height, 1)
    cols = (offsets[:, 1:2] + torch.arange(width, device=x.device)).view(n, 1, 1, width)
    index = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[index, channels, rows, cols]


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one `size`×`size` square per image, centred anywhere (it may stick out of the image)."""
    n, _, height, width = x.shape
    centres = torch.rand(n, 2, generator=generator)
    top = to_device((centres[:, 0] * height).long().sub_(size // 2).view(n, 1, 1, 1), x.device)
    left = to_device((centres[:, 1] * width).long().sub_(size // 2).view(n, 1, 1, 1), x.device)
    rows = torch.arange(height, device=x.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, width)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(inside, 0.0)


def warps(cfg: AugmentConfig) -> bool:
    """Whether `augment_batch`'s affine warp has anything to do."""
    return cfg.rotation > 0 or cfg.shift > 0 or cfg.zoom > 0 or cfg.hflip


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Every configured augmentation, in a fixed order (warp, crop, cutout), each drawing from `generator`."""
    if warps(cfg):
        x = augment_batch(x, cfg, generator)
    if cfg.crop:
        x = random_crop(x, cfg.crop, generator)
    if cfg.cutout:
        x = cutout(x, cfg.cutout, generator)
    return x


def augmentation_enabled(cfg: AugmentConfig) -> bool:
    return warps(cfg) or cfg.crop > 0 or cfg.cutout > 0


class BatchPreprocessor:
    """uint8 NCHW batch → float batch ready for the model, augmenting only when training."""

    def __init__(self, cfg: PreprocessConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.cfg = cfg
        self.mean = mean
        self.std = std
        self.augment = augmentation_enabled(cfg.augment)
        self._stats_on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, cfg: PreprocessConfig, train: ImageSet, preprocessing=None) -> "BatchPreprocessor":
        """`preprocessing`: the pretrained weights' Preprocessing, for normalize: weights."""
        if cfg.normalize == "featurewise":
            if not isinstance(train, ImageSet):
                raise ConfigError("preprocess.normalize: featurewise needs an in-memory dataset; "
                                  "use 'weights' for pretrained backbones, or data.cache: true")
            return cls(cfg, *fit_featurewise(train))
        if cfg.normalize == "weights":
            if preprocessing is None:
                raise ConfigError("preprocess.normalize: weights needs a model with pretrained weights "
                                  "(a BirdNet); use featurewise or none")
            return cls(cfg, torch.tensor(preprocessing.mean), torch.tensor(preprocessing.std))
        return cls(cfg)

    def state(self) -> dict:
        """What a checkpoint must keep to preprocess exactly as during training."""
        return {"mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist()}

    def __call__(self, images: torch.Tensor, *, train: bool, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        x = images.float().div_(255.0)
        if train and self.augment:
            x = augment(x, self.cfg.augment, generator or torch.Generator().manual_seed(0))
        if self.mean is not None:
            if x.device not in self._stats_on:  # moved once per device, not once per batch
                self._stats_on[x.device] = (self.mean.to(x.device).view(1, -1, 1, 1),
                                            self.std.to(x.device).view(1, -1, 1, 1))
            mean, std = self._stats_on[x.device]
            x = (x - mean) / std
        return x
