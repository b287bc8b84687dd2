"""Duplicates within and across splits: identical files, near-exact copies (a perceptual hash, mirrored too)
and near-identical content (cosine similarity of the backbone's features).

    exact     the same bytes (files) or the same pixels (images held in memory)
    near      perceptual hashes within data/leaks.NEAR_EXACT of 64 bits: resized, re-encoded, re-compressed
    mirrored  one image's hash within data/leaks.MIRRORED_EXACT bits of the other's mirror image
    similar   features with a cosine similarity ≥ SIMILAR_COSINE: the same scene re-shot, cropped, recoloured

A pair across splits is a leak: listed first (test involved first), with both paths and both splits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnlab.data.leaks import MIRRORED_EXACT, NEAR_EXACT, close_pairs, hamming

# Measured with EfficientNet-Lite0 on 600 photos of the shared birds at 224 px (174,000 pairs): two different
# photos reach at most 0.90 (same species; 99.9th percentile 0.84), a 90 % centre crop 0.93 at the median (0.82
# at worst). Pooled features are no good at resized or re-encoded copies (a half-size JPEG: 0.86 at the median,
# 0.63 at worst): the hash finds those. Another backbone may need another value: cnnlab audit --similar.
SIMILAR_COSINE = 0.92
SPLIT_ORDER = {"test": 0, "val": 1, "train": 2}


@dataclass
class Pair:
    first: int
    second: int
    kinds: set = field(default_factory=set)
    hash_distance: int | None = None
    cosine: float | None = None


def _pairs_above(features: np.ndarray, threshold: float, chunk: int = 1024) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j with cosine ≥ threshold; features L2-normalised; in row chunks."""
    out = []
    for start in range(0, len(features), chunk):
        similarity = features[start:start + chunk] @ features.T
        rows, cols = np.nonzero(similarity >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if start + r < c:
                out.append((start + r, c, float(similarity[r, c])))
    return out


def find_duplicates(digests: list[str], hashes: np.ndarray, mirrored: np.ndarray, features: np.ndarray, *,
                    hash_distance: int = NEAR_EXACT, cosine: float = SIMILAR_COSINE) -> list[Pair]:
    """Every pair of images that is a duplicate by at least one test (`features` L2-normalised)."""
    pairs: dict[tuple[int, int], Pair] = {}

    def add(i: int, j: int, kind: str) -> Pair:
        key = (min(i, j), max(i, j))
        pair = pairs.setdefault(key, Pair(*key))
        pair.kinds.add(kind)
        return pair

    groups: dict[str, list[int]] = {}
    for i, digest in enumerate(digests):
        groups.setdefault(digest, []).append(i)
    for members in groups.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                add(members[a], members[b], "exact")
    for i, j, distance in close_pairs(hashes, hashes, hash_distance, same=True):
        add(i, j, "near").hash_distance = distance
    for i, j, distance in close_pairs(mirrored, hashes, min(hash_distance, MIRRORED_EXACT)):
        if i != j:
            pair = add(i, j, "mirrored")
            pair.hash_distance = distance if pair.hash_distance is None else min(pair.hash_distance, distance)
    for i, j, similarity in _pairs_above(features, cosine):
        add(i, j, "similar")
    for pair in pairs.values():  # every pair gets both figures, whatever found it
        if pair.hash_distance is None:
            pair.hash_distance = int(hamming(hashes[pair.first:pair.first + 1], hashes[pair.second:pair.second + 1])[0, 0])
        pair.cosine = float(features[pair.first] @ features[pair.second])
    return list(pairs.values())


def ranked(pairs: list[Pair], splits: list[str]) -> list[Pair]:
    """Leaks first (a pair across splits; test involved before validation), then by similarity."""
    def key(pair: Pair):
        a, b = splits[pair.first], splits[pair.second]
        leak = a != b
        return (not leak, min(SPLIT_ORDER[a], SPLIT_ORDER[b]) if leak else 3, -pair.cosine)
    return sorted(pairs, key=key)
