"""What a notebook holds, as the pixels a trained model takes: file paths, PIL images, numpy arrays, tensors.

Every image is brought to the model's input size by the resize its record names (the weights' own:
stretch, or shorter side then centre crop, with their filter) — the same `resize_image` that
`cnnlab predict`, `serve` and training's streamed images use, so a photo of any size answers in
Python exactly what the command line answers.

Accepted, one image or a list of them:

    str / os.PathLike          an image file (decoded by the one guarded decoder: data/imagefolder.py)
    PIL.Image.Image            any mode (converted to RGB)
    numpy array                HWC (or HW, grey) uint8 pixels 0..255, as PIL and OpenCV-after-RGB give them;
                               float arrays in [0, 1] are taken as pixels / 255
    torch tensor               CHW or HWC, or a batch NCHW / NHWC, uint8 0..255 or float in [0, 1]

Anything else, a wrong number of channels or a float outside [0, 1] is one `DataError` naming the item.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import DataError


def _as_uint8_hwc(array: np.ndarray, what: str) -> np.ndarray:
    """HWC uint8 from HW/HWC arrays of uint8, or of floats in [0, 1]."""
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise DataError(f"{what}: expected an image of shape (H, W), (H, W, 3) or (3, H, W), got {tuple(array.shape)}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:  # RGBA: the colour, without the alpha channel
        array = array[:, :, :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating) or array.dtype == np.float16:
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError(f"{what}: float pixels must lie in [0, 1] (or pass uint8 pixels 0..255), "
                            f"got values from {float(np.nanmin(array)):.3g} to {float(np.nanmax(array)):.3g}")
        return np.ascontiguousarray((array * 255).round().astype(np.uint8))
    raise DataError(f"{what}: expected uint8 pixels (0..255) or floats in [0, 1], got dtype {array.dtype}")


def _channels_last(array: np.ndarray) -> np.ndarray:
    """A CHW array (channels first: 1 or 3 leading, more trailing) as HWC; HWC and HW as they are."""
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3, 4):
        return array.transpose(1, 2, 0)
    return array


def to_pil(item, what: str):
    """One image of any accepted kind → an RGB PIL image."""
    from PIL import Image

    from cnnlab.data.imagefolder import load_rgb

    if isinstance(item, (str, os.PathLike)):
        path = Path(item).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: no such image file")
        return load_rgb(path)
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        item = item.float().numpy() if item.is_floating_point() else item.numpy()
    if isinstance(item, np.ndarray):
        return Image.fromarray(_as_uint8_hwc(_channels_last(item), what))
    raise DataError(f"{what}: expected an image file path, a PIL image, a numpy array or a tensor, "
                    f"got {type(item).__name__}")


def as_items(images) -> list:
    """One image or many → a list of single images (a 4-D array or tensor is a batch)."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def pixels(images, *, size: int, resize: str, crop_ratio: float, interpolation: str) -> torch.Tensor:
    """The images as a uint8 NCHW batch at size×size, resized as the model's record says."""
    from cnnlab.data.streaming import resize_image

    items = as_items(images)
    if not items:
        raise DataError("no images given")
    out = []
    for index, item in enumerate(items):
        what = str(item) if isinstance(item, (str, os.PathLike)) else f"image {index}"
        # always through the resize, as decode_image does (a crop rescales even an image of the right size)
        image = resize_image(to_pil(item, what), size, resize, crop_ratio, interpolation)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()))
    return torch.stack(out)
