"""Image files: which suffixes count, decoding to RGB, and the `train/<class>/` + `test/<class>/` layout.

Every image is decoded fully with Pillow and converted to RGB (grayscale, palette, CMYK and
alpha images included); a file that does not decode is named in a DataError.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

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
