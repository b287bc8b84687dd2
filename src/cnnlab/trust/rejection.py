""""Unknown": refuse the images the model should not answer, by a score chosen on the validation split.

An in-distribution score per image, higher = more familiar:

    msp     the maximum (calibrated) softmax probability (Hendrycks & Gimpel 2017)
    energy  T · logsumexp(logits / T), the negative free energy (Liu et al. 2020): it keeps the logits'
            magnitude, which softmax throws away

The threshold is the `reject_rate` quantile of the validation images' scores, so it accepts 1 − reject_rate
of in-distribution images; anything scoring below it is answered `unknown`. The risk–coverage curve shows
what accepting fewer buys: the accuracy of what is accepted against the share accepted.
"""
from __future__ import annotations

import math

import numpy as np

from cnnlab.config import REJECT_SCORES


def rejection_scores(logits: np.ndarray, temperature: float, kind: str) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    if kind == "energy":
        return temperature * lse
    if kind == "msp":
        return np.exp(top - lse)  # the largest softmax probability, without forming the others
    raise ValueError(f"unknown rejection score {kind!r}; expected one of {', '.join(REJECT_SCORES)}")


def threshold(validation_scores: np.ndarray, reject_rate: float) -> float:
    """The score below which images are refused: the ⌊reject_rate · n⌋-th smallest validation score, so at
    least 1 − reject_rate of the validation images are accepted (a score equal to it is accepted)."""
    if not 0.0 <= reject_rate < 1.0:
        raise ValueError(f"the reject rate must lie in [0, 1), got {reject_rate}")
    s = np.sort(np.asarray(validation_scores, dtype=np.float64))
    if reject_rate == 0.0 or len(s) == 0:
        return -math.inf
    return float(s[int(math.floor(reject_rate * len(s)))])


def risk_coverage(scores: np.ndarray, correct: np.ndarray, points: int = 50) -> list[dict]:
    """Accuracy of the accepted images when only the most familiar share of them is accepted, at `points`
    shares from 1/points to all (the images ranked by score, most familiar first)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    right = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    n = len(order)
    out = []
    for i in range(1, points + 1):
        accepted = max(1, int(round(n * i / points)))
        out.append({"coverage": accepted / n, "accuracy": float(right[accepted - 1] / accepted)})
    return out


def aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk–coverage curve (error of the accepted, averaged over every coverage; lower is better)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    wrong = np.cumsum(1.0 - np.asarray(correct, dtype=np.float64)[order])
    return float((wrong / np.arange(1, len(order) + 1)).mean())


def ood_figures(inside: np.ndarray, outside: np.ndarray) -> dict:
    """How well a score tells in-distribution images (positives) from foreign ones: AUROC, and the share of
    foreign images accepted when 95 % of in-distribution ones are (FPR at 95 % TPR)."""
    from sklearn.metrics import roc_auc_score

    inside, outside = np.asarray(inside, dtype=np.float64), np.asarray(outside, dtype=np.float64)
    truth = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
    cut = threshold(inside, 0.05)
    return {"auroc": float(roc_auc_score(truth, np.r_[inside, outside])),
            "fpr_at_95_tpr": float((outside >= cut).mean()), "tpr": float((inside >= cut).mean()),
            "in_images": int(len(inside)), "out_images": int(len(outside))}
