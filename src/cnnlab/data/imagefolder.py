"""Image files: which suffixes count, decoding to RGB, and the `train/<class>/` + `test/<class>/` layout.

Every image is decoded fully with Pillow and converted to RGB (grayscale, palette, CMYK and
alpha images included); a file that does not decode is named in a DataError.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from cnnlab.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


# Pixels an image may declare before it is decoded: a photo of 100 megapixels passes, a few hundred
# bytes claiming 50,000 × 50,000 (a decompression bomb) does not. Pillow's own guard warns at 89 M
# and raises at 179 M; this one answers in cnnlab's words, for files and uploads alike.
MAX_PIXELS = 100_000_000


def load_rgb(source: Path | IO[bytes], *, name: str | None = None, max_pixels: int = MAX_PIXELS,
             at_least: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image (a file, or the bytes of an upload) fully and convert it to RGB; a broken, truncated
    or oversized one raises DataError naming it (`name`, else the path).

    `at_least` (width, height): a JPEG larger than twice that is decoded at 1/2, 1/4 or 1/8 of its size
    by libjpeg's DCT scaling (Pillow's `draft`), never below it: a 12-megapixel photo bound for 224×224
    decodes several times faster, and the resize that follows sees at least the pixels it needs."""
    label = name or str(source)
    with warnings.catch_warnings():  # Pillow warns of corrupt EXIF, oversized tags ...: the outcome says enough
        warnings.simplefilter("ignore")
        return _load_rgb(source, label, max_pixels, at_least)


def _load_rgb(source, label: str, max_pixels: int, at_least: tuple[int, int] | None) -> Image.Image:
    try:
        with Image.open(source) as img:
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise DataError(f"{label}: {width}×{height} = {width * height:,} pixels is more than the "
                                f"{max_pixels:,} an image may have")
            if at_least is not None and img.format == "JPEG":
                img.draft("RGB", at_least)
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Composite transparency on white rather than letting it turn black.
                rgba = img.convert("RGBA")
                canvas = Image.new("RGB", rgba.size, (255, 255, 255))
                canvas.paste(rgba, mask=rgba.getchannel("A"))
                return canvas
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise DataError(f"{label}: cannot decode image (not in an image format Pillow reads)") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard, before the header reached ours
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(declared.group(1)):,}" if declared else "more"
        raise DataError(f"{label}: {count} pixels is more than the {max_pixels:,} an image may have") from None
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 — a hostile file can make any of Pillow's decoders raise anything
        # (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, ZeroDivisionError ...):
        # each means "this file is not an image cnnlab can use", said in one line that names it
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{label}: cannot decode image ({detail})") from None
