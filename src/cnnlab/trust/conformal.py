"""Split-conformal prediction sets: for each image, the smallest set of classes that holds the true one
with probability ≥ the coverage asked for (Vovk et al. 2005; Angelopoulos et al. 2021).

Each calibration image (held out from training) gets a non-conformity score s(x, y): how far down the
model's ranking, in probability mass, its true class sits. For a coverage 1 − α, q̂ is the ⌈(n + 1)(1 − α)⌉-th
smallest of the n scores; a new image's set is every class y whose score would be ≤ q̂. If the calibration and
new images are exchangeable, P(true class ∈ set) ≥ 1 − α — a guarantee on average over images, whatever the
model.

    aps   s = the mass of the classes ranked above y, plus U · p(y), U uniform on [0, 1] (Romano et al. 2020)
    raps  aps + λ · max(0, rank(y) − k): long tails of tiny probabilities cost extra, so sets stay small
          (Angelopoulos et al. 2021)
    lac   s = 1 − p(y): every class above one probability threshold (Sadinle et al. 2019); the smallest sets
          on average, but not adaptive: a hard image gets no larger set than an easy one would need

The calibration scores are randomised (U drawn from a seeded generator, so a record is reproducible): without
U, a model more accurate than 1 − α puts q̂ among its own top-class probabilities (≈ 0.99) and every set then
drags in the long tail. A set is answered with U = 0 — every class whose mass above it (plus the penalty) is
≤ q̂ — so answers are deterministic (the same on every engine) and hold each class the randomised rule would:
the coverage stays ≥ 1 − α, a little above it. The scores are monotone in the rank, so a set is always a prefix
of the ranking, and never empty: the top class is always in (mass above it: 0).
"""
from __future__ import annotations

import math

import numpy as np


def _ranked(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's class order (most likely first, ties by class index), its probabilities in that order, and
    the mass ranked above each place."""
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.take_along_axis(probs, order, axis=1)
    return order, ranked, np.cumsum(ranked, axis=1) - ranked


def _penalty(classes: int, method: str, lam: float, k_reg: int) -> np.ndarray:
    """RAPS's penalty for the ranks 1..classes (zeros for APS)."""
    if method == "aps":
        return np.zeros(classes)
    return lam * np.maximum(0, np.arange(1, classes + 1) - k_reg)


def scores(probs: np.ndarray, labels: np.ndarray, *, method: str = "aps", lam: float = 0.01, k_reg: int = 1,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """The non-conformity score of each image's true class: U drawn from `rng` (None: U = 1, the mass up to
    and including the true class, the non-randomised score)."""
    probs = np.asarray(probs, dtype=np.float64)
    order, ranked, above = _ranked(probs)
    rank = np.argmax(order == np.asarray(labels)[:, None], axis=1)  # 0-based place of the true class
    rows = np.arange(len(rank))
    if method == "lac":
        return 1.0 - ranked[rows, rank]
    u = rng.random(len(rank)) if rng is not None else np.ones(len(rank))
    return above[rows, rank] + u * ranked[rows, rank] + _penalty(probs.shape[1], method, lam, k_reg)[rank]


def quantile(calibration_scores: np.ndarray, coverage: float) -> float:
    """q̂ for `coverage` = 1 − α: the ⌈(n + 1)(1 − α)⌉-th smallest score (inf when that exceeds n: with too
    few calibration images for this coverage, every class is in the set)."""
    s = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    k = math.ceil((len(s) + 1) * coverage - 1e-9)  # the tolerance: 0.9 × 10 is 9.000000000000002 in floats
    return float(s[k - 1]) if k <= len(s) else math.inf


def prediction_sets(probs: np.ndarray, qhat: float, *, method: str = "aps", lam: float = 0.01, k_reg: int = 1,
                    u: np.ndarray | None = None) -> list[list[int]]:
    """Each image's set of class indices, most likely first: U = 0 (None), cnnlab's deterministic answer,
    or the randomised rule with each image's `u` (the bare definition, which may give an empty set; its
    coverage is at most 1 − α + 1/(n + 1) — what the tests check)."""
    probs = np.asarray(probs, dtype=np.float64)
    order, ranked, above = _ranked(probs)
    if method == "lac":
        total = 1.0 - ranked
    else:
        total = above + _penalty(probs.shape[1], method, lam, k_reg)[None, :]
        if u is not None:
            total = total + np.asarray(u)[:, None] * ranked
    inside = total <= qhat + 1e-12  # float sums: a score computed equal to q̂ is inside, as its own image was
    inside[:, 0] |= u is None  # cnnlab's answer always holds the top class (APS's does anyway: nothing above it)
    return [order[i, inside[i]].tolist() for i in range(len(order))]


def coverage_figures(sets: list[list[int]], labels: np.ndarray) -> dict:
    """Empirical coverage, mean set size, and coverage by set size (the conditional check the guarantee
    does not give: sets of one class should not be the ones that miss)."""
    labels = np.asarray(labels)
    hit = np.array([int(y) in s for s, y in zip(sets, labels)], dtype=np.float64)
    size = np.array([len(s) for s in sets])
    by_size = []
    for n in sorted(set(size.tolist())):
        inside = size == n
        by_size.append({"size": int(n), "images": int(inside.sum()), "coverage": float(hit[inside].mean())})
    return {"coverage": float(hit.mean()) if len(hit) else None, "mean_size": float(size.mean()) if len(size) else None,
            "by_size": by_size}
