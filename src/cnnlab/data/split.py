"""Seeded, stratified hold-out and k-fold splits (scikit-learn does the sampling)."""
from __future__ import annotations

# scikit-learn is imported inside the functions that draw a split: `cnnlab list` and `--help` stay quick.

import numpy as np

from cnnlab.data.images import ImageSet
from cnnlab.errors import DataError


def holdout_split(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Hold out `fraction` of `train`, stratified by class, shuffled with `seed`.

    Keras's `validation_split` takes the *last* 10 %, which the lab rightly avoided.
    """
    from sklearn.model_selection import train_test_split

    if fraction <= 0:
        return train, None
    labels = train.labels.numpy()
    index = np.arange(len(labels))
    counts = np.bincount(labels)
    present = counts[counts > 0]
    # Stratify when it is possible: every class needs 2 images and the hold-out one per class.
    stratify = labels if present.min() >= 2 and round(fraction * len(labels)) >= len(present) else None
    try:
        fit_idx, val_idx = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"cannot hold out {fraction:.0%} of {len(labels)} training images for validation "
                        f"({exc}); lower data.val_fraction") from None
    return train.subset(np.sort(fit_idx)), train.subset(np.sort(val_idx))


def kfold_splits(train: ImageSet, folds: int, seed: int) -> list[tuple[ImageSet, ImageSet]]:
    """K stratified folds: each (fit, held-out) pair covers `train` once."""
    from sklearn.model_selection import StratifiedKFold

    labels = train.labels.numpy()
    if np.bincount(labels)[np.bincount(labels) > 0].min() < folds:
        raise DataError(f"cannot make {folds} stratified folds: some class has fewer than {folds} images")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train.subset(fit), train.subset(held)) for fit, held in splitter.split(np.zeros(len(labels)), labels)]


def stratified_subset(train: ImageSet, size: int, seed: int) -> ImageSet:
    """Keep `size` images of `train` with the class proportions intact (for short runs)."""
    if size >= len(train):
        return train
    return train.subset(stratified_subset_index(train.labels.numpy(), size, seed))


def stratified_subset_index(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted positions of `size` of `labels`, class proportions intact (all of them if there are fewer)."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    keep, _ = train_test_split(np.arange(len(labels)), train_size=size, random_state=seed,
                               stratify=labels if size >= len(np.unique(labels)) else None)
    return np.sort(keep)
