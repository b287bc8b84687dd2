"""The same photo in two splits: a perceptual hash of every image, and the pairs across splits it finds.

A test accuracy is only as honest as the split behind it: a photo in train and again in test (copied,
resized, re-encoded) is a test image the model has seen. Each image is hashed as it is fed to the network
(decoded and resized: the hash sees what the model sees):

    grey levels → 32 × 32 (antialiased) → 2-D DCT-II → the 8 × 8 lowest frequencies → 64 bits: above or below
    their median (the DC term left out of the median)

a perceptual hash in the manner of pHash (Zauner 2010), computed here in batches of tensors so a run can
afford it for every image of its splits. Two images whose hashes differ in at most `NEAR_EXACT` of the 64
bits are called near-exact duplicates: resizing and JPEG re-encoding move a few bits, two different
photos ~32 on average. The run's leak check (`data.leak_check`)
and `cnnlab audit` (which adds feature similarity) both use it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

HASH_SIDE, LOW = 32, 8
NEAR_EXACT = 6  # bits of 64: at most this many differ → a near-exact duplicate. Measured on the birds at 224 px:
# copies resized to 0.5 or 0.6, or re-encoded at JPEG quality 30-75, differ by 0-4 bits; among the 4.4 million pairs
# of 2,969 different photos a few differ by 8 bits, none directly by 6 (benchmarks/audit_birds.py)
MIRRORED_EXACT = 4  # against a mirror image, every pair is compared twice: a stricter bound keeps chance pairs out
SPLITS = ("train", "val", "test")


def _dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix: D @ x is the DCT of the column vector x."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


_DCT = _dct_matrix(HASH_SIDE)
_BIT_WEIGHTS = torch.tensor([1 << b for b in range(63)] + [-(1 << 63)], dtype=torch.int64)  # two's complement


def hash_batch(images: torch.Tensor, *, mirrored: bool = False) -> np.ndarray:
    """64-bit perceptual hashes (as uint64) of a uint8 (N, C, H, W) batch (`mirrored`: of its mirror images)."""
    x = images.float()
    if mirrored:
        x = x.flip(-1)
    grey = x.mean(1, keepdim=True) if x.shape[1] != 3 else (
        0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    small = F.interpolate(grey, size=(HASH_SIDE, HASH_SIDE), mode="bilinear", antialias=True,
                          align_corners=False)[:, 0]
    coefficients = (_DCT @ small @ _DCT.T)[:, :LOW, :LOW].reshape(len(x), -1)
    median = coefficients[:, 1:].median(dim=1, keepdim=True).values  # the DC term is the brightness: left out
    bits = (coefficients > median).to(torch.int64)
    return (bits * _BIT_WEIGHTS).sum(1).numpy().view(np.uint64)


IN_PROCESS = 512  # images of a streamed split decoded here rather than by worker processes (their start costs more)


def perceptual_hashes(source, *, batch_size: int = 256, mirrored: bool = False) -> np.ndarray:
    """The hash of every image of an ImageSource, in its order."""
    if getattr(source, "num_workers", 0) and len(source) <= IN_PROCESS:
        source = dataclasses.replace(source, num_workers=0)
    out = [hash_batch(images.cpu(), mirrored=mirrored) for images, _ in source.batches(batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between every hash of `a` (rows) and of `b` (columns)."""
    x = np.bitwise_xor(a[:, None], b[None, :])
    if hasattr(np, "bitwise_count"):  # numpy ≥ 2.0
        return np.bitwise_count(x).astype(np.int16)
    return _POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.int16)


def close_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, *, same: bool = False,
                chunk: int = 1024) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every hash of `a` within `max_distance` bits of one of `b`; `same`: a and b are one
    set, each pair once (i < j). In row chunks, so 50,000 images need ~50 MB at a time, not 20 GB."""
    found = []
    for start in range(0, len(a), chunk):
        distances = hamming(a[start:start + chunk], b)
        rows, cols = np.nonzero(distances <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if not same or i < c:
                found.append((i, c, int(distances[r, c])))
    return found


def item_names(splits) -> dict[str, list[str]]:
    """How each image of each split is named in a list: its file (streamed), its row of split.csv, or split[i]."""
    rows = splits.split_rows or []
    out = {}
    for name in SPLITS:
        source = getattr(splits, name)
        if source is None:
            continue
        paths = getattr(source, "paths", None)
        listed = [r["path"] for r in rows if r["split"] == name]
        if paths is not None:
            out[name] = [str(getattr(p, "key", p)) for p in paths]
        elif len(listed) == len(source):
            out[name] = listed
        else:
            out[name] = [f"{name}[{i}]" for i in range(len(source))]
    return out


@dataclass
class Leak:
    """A test image with a near-exact duplicate in train or validation."""

    test: str
    other: str
    other_split: str
    distance: int


def find_leaks(splits, *, max_distance: int = NEAR_EXACT) -> list[Leak]:
    """Test images that have a near-exact duplicate (perceptual hash) in the training or validation split."""
    if splits.test is None:
        return []
    names = item_names(splits)
    test = perceptual_hashes(splits.test)
    leaks = []
    for other in ("train", "val"):
        source = getattr(splits, other)
        if source is None or len(source) == 0:
            continue
        hashes = perceptual_hashes(source)
        for i, j, distance in close_pairs(test, hashes, max_distance):
            leaks.append(Leak(names["test"][i], names[other][j], other, distance))
    return sorted(leaks, key=lambda leak: (leak.distance, leak.test))


def leaked_test_images(leaks: list[Leak]) -> int:
    """How many test images have at least one near-exact duplicate (a test image may have several: one pair each)."""
    return len({leak.test for leak in leaks})


def leak_rows(leaks: list[Leak]) -> list[dict]:
    return [{"test_image": leak.test, "duplicate": leak.other, "duplicate_split": leak.other_split,
             "hash_distance": leak.distance} for leak in leaks]
