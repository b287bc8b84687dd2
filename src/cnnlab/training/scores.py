"""Accuracy, balanced accuracy and macro-F1 of a confusion matrix: the figures an imbalanced test split needs.

Plain accuracy weighs every image alike, so a class with 5 test images can fail entirely and
cost a tenth of a point. Balanced accuracy (the mean of the per-class recalls) and macro-F1
(the mean of the per-class F1 scores) weigh every class alike. Both follow scikit-learn's
definitions exactly (tests/test_imbalance.py checks them against it on saved predictions):

- balanced accuracy: the mean recall over the classes that have true images;
- macro-F1: the mean F1 over the classes that occur as a label or a prediction, a class
  never predicted (or never true) scoring 0 (scikit-learn's `zero_division=0`).

Computed from one (classes × classes) matrix, so an evaluation sharded over processes sums
its matrices and derives the figures once (loop.evaluate).
"""
from __future__ import annotations

import numpy as np

# The names these figures have in metrics.csv and results.json, after the split's prefix (val_, test_).
SCORES = ("acc", "bal_acc", "macro_f1")


def scores(matrix) -> dict[str, float]:
    """{'acc', 'bal_acc', 'macro_f1'} of a confusion matrix (row: true class, column: predicted)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    if total == 0:
        return {"acc": 0.0, "bal_acc": 0.0, "macro_f1": 0.0}
    right = np.diag(matrix)
    true_counts, predicted_counts = matrix.sum(1), matrix.sum(0)
    present = true_counts > 0
    recall = np.divide(right, true_counts, out=np.zeros_like(right), where=present)
    precision = np.divide(right, predicted_counts, out=np.zeros_like(right), where=predicted_counts > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(right), where=both > 0)
    occurs = present | (predicted_counts > 0)
    return {"acc": float(right.sum() / total), "bal_acc": float(recall[present].mean()),
            "macro_f1": float(f1[occurs].mean())}

