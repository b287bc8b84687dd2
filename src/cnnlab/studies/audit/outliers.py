"""Outliers: images far from every other in the backbone's feature space, and images no model should learn from.

    far           the mean cosine distance to the K_NEIGHBOURS nearest other images is beyond Tukey's far-out fence
                  (Q3 + 3 × IQR of that distance over the whole data): a photo of something else, a screenshot
    near-blank    the pixels' standard deviation below BLANK_STD (of 0-255): a black frame, an empty scan
    tiny          the file's shorter side below TINY_SIDE pixels: upscaled to the input size, it holds nothing
    extreme-aspect  the longer side more than MAX_ASPECT times the shorter: squashed or mostly cropped away
"""
from __future__ import annotations

import numpy as np

K_NEIGHBOURS = 10
BLANK_STD = 3.0
TINY_SIDE = 32
MAX_ASPECT = 4.0


def knn_distance(features: np.ndarray, k: int = K_NEIGHBOURS, chunk: int = 1024) -> np.ndarray:
    """Each image's mean cosine distance to its k nearest other images (features L2-normalised)."""
    k = max(1, min(k, len(features) - 1))
    out = np.empty(len(features))
    for start in range(0, len(features), chunk):
        distance = 1.0 - features[start:start + chunk] @ features.T
        for r in range(len(distance)):
            distance[r, start + r] = np.inf  # not its own neighbour
        out[start:start + chunk] = np.sort(np.partition(distance, k - 1, axis=1)[:, :k], axis=1).mean(1)
    return out


def far_fence(distances: np.ndarray) -> float:
    q1, q3 = np.percentile(distances, [25, 75])
    return float(q3 + 3.0 * (q3 - q1))


def find_outliers(features: np.ndarray, pixel_std: np.ndarray, sizes: list[tuple[int, int] | None]
                  ) -> tuple[list[dict], dict]:
    """[{"index", "kind", "value"}], most unusual first within a kind, and the thresholds used."""
    distances = knn_distance(features)
    fence = far_fence(distances)
    found = [{"index": int(i), "kind": "far", "value": float(distances[i])}
             for i in np.argsort(-distances) if distances[i] > fence]
    found += [{"index": int(i), "kind": "near-blank", "value": float(pixel_std[i])}
              for i in np.argsort(pixel_std) if pixel_std[i] < BLANK_STD]
    for i, size in enumerate(sizes):
        if size is None:
            continue
        short, long = min(size), max(size)
        if short < TINY_SIDE:
            found.append({"index": i, "kind": "tiny", "value": float(short)})
        if short and long / short > MAX_ASPECT:
            found.append({"index": i, "kind": "extreme-aspect", "value": float(long / short)})
    return found, {"k_neighbours": K_NEIGHBOURS, "far_fence": fence, "blank_std": BLANK_STD, "tiny_side": TINY_SIDE,
                   "max_aspect": MAX_ASPECT, "median_knn_distance": float(np.median(distances))}
