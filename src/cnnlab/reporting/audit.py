"""The audit page's thumbnails: flagged images with a caption each, on one canvas (as top_losses.png)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.reporting.curves import _save, plt
from cnnlab.reporting.interpretation import tile


def plot_captioned(path: Path, images: np.ndarray, captions: list[str], *, title: str, cols: int = 4) -> None:
    """Images (uint8 N×H×W×3, one size), each with a caption of up to three short lines above it."""
    cols = max(1, min(cols, len(images)))
    canvas, anchors = tile(images, cols, caption_share=0.3)
    width = 3.2 * cols
    fig, ax = plt.subplots(figsize=(width, width * canvas.shape[0] / canvas.shape[1] + 0.4))
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.4 / fig.get_figheight())
    ax.axis("off")
    ax.imshow(canvas, interpolation="nearest")
    for (x, y), caption in zip(anchors, captions):
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def side_by_side(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pairs of images (N×H×W×3 each) as one image per pair, a white gap between."""
    gap = np.full((len(first), first.shape[1], max(2, first.shape[2] // 16), 3), 255, dtype=np.uint8)
    return np.concatenate([first, gap, second], axis=2)
