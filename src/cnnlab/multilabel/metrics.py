"""Multi-label figures, each equal to scikit-learn's on the same arrays (tests/test_multilabel.py checks):

- mAP: the mean over classes *with a positive* of the average precision (scikit-learn's
  `average_precision_score`: the step-wise area Σ (Rₙ − Rₙ₋₁) Pₙ, no interpolation); a class
  without a positive in the split has no defined AP and is left out (counted in `map_classes`);
- micro F1 (every image×class decision pooled) and macro F1 (the mean of each class's F1, a class
  never true and never predicted scoring 0: scikit-learn's `zero_division=0`) at the thresholds;
- exact match (subset accuracy: every class of the image right) and Hamming loss (the share of
  image×class decisions that are wrong).

Computed in float64 numpy: a split's probabilities are small (images × classes).
"""
from __future__ import annotations

import numpy as np

# The names of the figures in metrics.csv / results.json after the split's prefix, per epoch (at the
# thresholds in force: 0.5 while training, the validation-chosen ones on the test split).
EPOCH_SCORES = ("map", "micro_f1", "macro_f1", "exact_match", "hamming_loss")


def _as_arrays(probabilities, targets) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64) > 0.5
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"probabilities {p.shape} and targets {t.shape} must both be (images, classes)")
    return p, t


def ranked_cuts(scores: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class's images ranked by score, highest first, cut after each distinct score (one threshold per
    distinct score, as scikit-learn ties them): (the scores in rank order, each cut's predicted count, each
    cut's true positives)."""
    order = np.argsort(-scores, kind="mergesort")
    ranked = scores[order]
    last = np.r_[np.nonzero(np.diff(ranked))[0], len(ranked) - 1]  # the last position of each distinct score
    return ranked, last + 1, np.cumsum(hits[order])[last]


def precision_recall_curve(probabilities, targets, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of class `cls` at every distinct score, from the highest down."""
    p, t = _as_arrays(probabilities, targets)
    _, predicted, true_positives = ranked_cuts(p[:, cls], t[:, cls])
    return true_positives / max(1, int(t[:, cls].sum())), true_positives / predicted


def average_precisions(probabilities, targets) -> np.ndarray:
    """Each class's average precision (NaN for a class without a positive): Σ (Rₙ − Rₙ₋₁) Pₙ."""
    p, t = _as_arrays(probabilities, targets)
    out = np.full(p.shape[1], np.nan)
    for c in range(p.shape[1]):
        if t[:, c].any():
            recall, precision = precision_recall_curve(p, t, c)
            out[c] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return out


def _decisions(p: np.ndarray, thresholds) -> np.ndarray:
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (p.shape[1],))
    return p >= thresholds


def _f1(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def multilabel_figures(probabilities, targets, thresholds=0.5) -> dict[str, float]:
    """{map, map_classes, micro_f1, macro_f1, exact_match, hamming_loss, label_cardinality} of a split."""
    p, t = _as_arrays(probabilities, targets)
    if len(p) == 0:
        return {name: 0.0 for name in EPOCH_SCORES} | {"map_classes": 0, "label_cardinality": 0.0}
    predicted = _decisions(p, thresholds)
    tp = (predicted & t).sum(0)
    fp = (predicted & ~t).sum(0)
    fn = (~predicted & t).sum(0)
    aps = average_precisions(p, t)
    defined = ~np.isnan(aps)
    return {"map": float(aps[defined].mean()) if defined.any() else 0.0, "map_classes": int(defined.sum()),
            "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())), "macro_f1": float(_f1(tp, fp, fn).mean()),
            "exact_match": float((predicted == t).all(1).mean()), "hamming_loss": float((predicted != t).mean()),
            "label_cardinality": float(t.sum(1).mean())}


def per_class_table(probabilities, targets, thresholds, class_names: list[str]) -> list[dict]:
    """One row per class: positives, predicted, AP, precision, recall, F1 at its threshold, the threshold."""
    p, t = _as_arrays(probabilities, targets)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (p.shape[1],))
    predicted = p >= thresholds
    aps = average_precisions(p, t)
    rows = []
    for c, name in enumerate(class_names):
        tp = int((predicted[:, c] & t[:, c]).sum())
        fp = int((predicted[:, c] & ~t[:, c]).sum())
        fn = int((~predicted[:, c] & t[:, c]).sum())
        rows.append({"class": name, "positives": int(t[:, c].sum()), "predicted": int(predicted[:, c].sum()),
                     "ap": None if np.isnan(aps[c]) else float(aps[c]),
                     "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
                     "f1": float(_f1(tp, fp, fn)), "missed": fn, "hallucinated": fp,
                     "threshold": float(thresholds[c])})
    return rows
