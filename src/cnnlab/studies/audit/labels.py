"""Label issues: out-of-fold probabilities from K-fold heads on cached features, then confident learning.

Every image is predicted by a head that never saw it (stratified, seeded K folds over all the images of every
split), so a mislabeled photo cannot vouch for its own label. Two heads are fitted — a linear probe (logistic
regression, L2, on standardised features) and a k-NN (cosine) — and the one with the lower out-of-fold log loss
gives the probabilities. cleanlab's `find_label_issues` (confident learning, Northcutt et al. 2021) then
flags the images whose given label the probabilities contradict, ranked by self-confidence (the probability
of the given label: lowest first).
"""
from __future__ import annotations

import time

import numpy as np

from cnnlab.errors import ConfigError, DataError

KNN_NEIGHBOURS = 10


def _heads() -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"linear probe (logistic regression, C=1)":
            lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)),
            f"k-NN (k={KNN_NEIGHBOURS}, cosine, distance-weighted)":
            lambda: KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS, metric="cosine", weights="distance")}


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int,
                              seed: int) -> dict:
    """{"head", "probabilities" (N × classes), "folds", "log_loss" per head, "accuracy" per head, "seconds"}."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    k = int(min(folds, present.min()))
    if k < 2:
        rare = [str(c) for c in np.nonzero((counts > 0) & (counts < 2))[0][:5]]
        raise DataError(f"label issues need K-fold predictions, and class(es) {', '.join(rare)} have a single image; "
                        "give each class at least two images")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    found, losses, accuracies, seconds = {}, {}, {}, {}
    for name, make in _heads().items():
        tick = time.perf_counter()
        probs = np.zeros((len(labels), num_classes))
        for fit, held in splitter.split(features, labels):
            head = make()
            if hasattr(head, "n_neighbors"):  # a fold smaller than k: every image a neighbour
                head.set_params(n_neighbors=min(KNN_NEIGHBOURS, len(fit)))
            head.fit(features[fit], labels[fit])
            probs[np.ix_(held, head.classes_)] = head.predict_proba(features[held])
        found[name] = probs
        clipped = np.clip(probs, 1e-12, 1.0)
        losses[name] = float(log_loss(labels, clipped / clipped.sum(1, keepdims=True), labels=range(num_classes)))
        accuracies[name] = float((probs.argmax(1) == labels).mean())
        seconds[name] = time.perf_counter() - tick
    best = min(losses, key=losses.get)
    return {"head": best, "probabilities": found[best], "folds": k, "log_loss": losses, "accuracy": accuracies,
            "seconds": seconds}


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Indices of the images whose given label is likely wrong, most likely first (cleanlab)."""
    try:
        from cleanlab.filter import find_label_issues as confident_learning
    except ImportError:
        raise ConfigError("cnnlab audit finds label issues with cleanlab: pip install \"cnnlab[audit]\"") from None
    # n_jobs=1: cleanlab's default forks a multiprocessing pool from this process, which holds PyTorch's and
    # OpenMP's threads; a forked worker can then wait forever on a lock one of those threads held (seen: the
    # suite's audit test hung in Pool.terminate). One process is fast enough here (seconds for thousands of images).
    return np.asarray(confident_learning(labels=labels, pred_probs=probabilities, n_jobs=1,
                                         return_indices_ranked_by="self_confidence"), dtype=np.int64)
