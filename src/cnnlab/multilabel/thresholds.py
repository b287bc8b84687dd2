"""Each class's decision threshold, chosen on the validation split (never the test split).

`f1`: per class, the probability cut that maximises that class's F1 on validation (every distinct
score is tried; the cut is placed half-way to the next lower score, so a probability equal to a
validation score decides as validation did). A class with no positive in validation keeps 0.5 —
nothing can be learnt about its cut. `fixed`: 0.5 for every class.
"""
from __future__ import annotations

import numpy as np

from cnnlab.multilabel.metrics import ranked_cuts

THRESHOLD_MODES = ("f1", "fixed")
DEFAULT_THRESHOLD = 0.5


def fit_thresholds(probabilities, targets, mode: str = "f1") -> np.ndarray:
    """float64 (C,) thresholds for `mode` (one of THRESHOLD_MODES) from validation probabilities and targets."""
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64) > 0.5
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"thresholds: expected one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")
    out = np.full(p.shape[1], DEFAULT_THRESHOLD)
    if mode == "fixed" or len(p) == 0:
        return out
    for c in range(p.shape[1]):
        positives = int(t[:, c].sum())
        if positives == 0:
            continue
        scores, predicted, tp = ranked_cuts(p[:, c], t[:, c])
        best = int(np.argmax(2 * tp / (predicted + positives)))  # F1; the highest cut on a tie: fewest false positives
        below = scores[predicted[best]] if predicted[best] < len(scores) else 0.0
        out[c] = (scores[predicted[best] - 1] + below) / 2
    return out
