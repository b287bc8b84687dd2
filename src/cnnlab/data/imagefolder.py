"""Image folders: `train/<class>/*.png|jpg` and `test/<class>/*` (torchvision's ImageFolder layout).

Images are decoded once with Pillow, converted to RGB (grayscale, palette, CMYK and alpha
images included) and must all share one size; a file that does not decode is named.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.data.images import DataSplits, ImageSet, imageset_from_numpy
from cnnlab.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def load_rgb(path: Path) -> Image.Image:
    """Decode an image fully and convert it to RGB; broken files raise DataError naming them."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Composite transparency on white rather than letting it turn black.
                rgba = img.convert("RGBA")
                canvas = Image.new("RGB", rgba.size, (255, 255, 255))
                canvas.paste(rgba, mask=rgba.getchannel("A"))
                return canvas
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_split(split_dir: Path, class_names: list[str]) -> ImageSet:
    images, labels, size = [], [], None
    for label, name in enumerate(class_names):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            array = np.asarray(load_rgb(file))
            if size is None:
                size = array.shape
            elif array.shape != size:
                raise DataError(f"{file}: image is {array.shape[1]}×{array.shape[0]} but earlier images are "
                                f"{size[1]}×{size[0]}; an in-memory image folder needs one size")
            images.append(array)
            labels.append(label)
    if not images:
        raise DataError(f"{split_dir}: no images found (expected {split_dir}/<class>/*.png or *.jpg)")
    return imageset_from_numpy(np.stack(images), np.asarray(labels, dtype=np.int64), source=str(split_dir))


def read_image_folder(path: Path, num_classes: int | None = None) -> DataSplits:
    class_names = _class_dirs(path / "train")
    if not class_names:
        raise DataError(f"{path / 'train'}: no class sub-folders found")
    unknown = sorted(set(_class_dirs(path / "test")) - set(class_names))
    if unknown:
        raise DataError(f"{path / 'test'}: classes not in {path / 'train'}: {', '.join(unknown)}")
    return DataSplits(train=_read_split(path / "train", class_names), val=None,
                      test=_read_split(path / "test", class_names), class_names=class_names,
                      description=f"image folder {path}")
