"""Seeded, stratified hold-out and k-fold splits (scikit-learn does the sampling).

Importing scikit-learn takes about 2 s (scipy comes with it), longer than drawing a split of
CIFAR's 11,250 labels, and the same labels, sizes and seed always give the same split. So each
draw is remembered on disk (`split_memo.py`): a later run with the same data reads the indices
scikit-learn drew and never imports it. `cnnlab list` and `--help` import it never.
"""
from __future__ import annotations

import numpy as np

from cnnlab.data.images import ImageSet
from cnnlab.data.split_memo import remembered
from cnnlab.errors import DataError


def drawn_labels(split: ImageSet) -> np.ndarray:
    """The labels a split is drawn by: class indices, or a multi-label split's 0/1 matrix as uint8 (compact, and one
    memo key whatever the targets' float type)."""
    labels = split.labels.numpy()
    return (labels > 0.5).astype(np.uint8) if labels.ndim == 2 else labels


def holdout_split(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Hold out `fraction` of `train`, stratified by class, shuffled with `seed`.

    Keras's `validation_split` takes the *last* 10 %, which the lab rightly avoided.
    """
    if fraction <= 0:
        return train, None
    labels = drawn_labels(train)
    fit_idx, val_idx = remembered("holdout", labels, (fraction, seed), lambda: _draw_holdout(labels, fraction, seed))
    return train.subset(fit_idx), train.subset(val_idx)


def _multilabel_splitter(kind: str):
    """iterative-stratification's splitter `kind`, or one line saying how to install it."""
    try:
        from iterstrat import ml_stratifiers
    except ImportError:
        raise DataError("multi-label data is split by iterative stratification: pip install "
                        "'cnnlab[multilabel]' (the iterative-stratification package)") from None
    return getattr(ml_stratifiers, kind)


def multilabel_train_test(labels: np.ndarray, fraction: float, seed: int, *, train_size: bool = False
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted positions: `fraction` of the images held out (or kept, with `train_size`),
    each label's frequency kept in both parts by iterative stratification."""
    splitter = _multilabel_splitter("MultilabelStratifiedShuffleSplit")
    size = {"train_size" if train_size else "test_size": fraction}
    matrix = np.asarray(labels, dtype=np.int64)
    kept, held = next(splitter(n_splits=1, random_state=seed, **size).split(np.zeros((len(matrix), 1)), matrix))
    return np.sort(kept), np.sort(held)


def _draw_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if labels.ndim == 2:
        return multilabel_train_test(labels, fraction, seed)

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
    return np.sort(fit_idx), np.sort(val_idx)


def kfold_splits(train: ImageSet, folds: int, seed: int) -> list[tuple[ImageSet, ImageSet]]:
    """K stratified folds: each (fit, held-out) pair covers `train` once."""
    labels = drawn_labels(train)
    if labels.ndim == 2:
        if len(labels) < folds:
            raise DataError(f"cannot make {folds} folds of {len(labels)} training images")
    elif np.bincount(labels)[np.bincount(labels) > 0].min() < folds:
        raise DataError(f"cannot make {folds} stratified folds: some class has fewer than {folds} images")
    (fold_of,) = remembered("kfold", labels, (folds, seed), lambda: (_draw_folds(labels, folds, seed),))
    everything = np.arange(len(labels))
    return [(train.subset(everything[fold_of != k]), train.subset(everything[fold_of == k])) for k in range(folds)]


def _draw_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..K-1) each image is held out in."""
    from sklearn.model_selection import StratifiedKFold

    fold_of = np.empty(len(labels), dtype=np.int64)
    if labels.ndim == 2:  # multi-label: iterative stratification
        splitter = _multilabel_splitter("MultilabelStratifiedKFold")(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[held] = k
    return fold_of


def stratified_subset(train: ImageSet, size: int, seed: int) -> ImageSet:
    """Keep `size` images of `train` with the class proportions intact (for short runs)."""
    if size >= len(train):
        return train
    return train.subset(stratified_subset_index(drawn_labels(train), size, seed))


def stratified_subset_index(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted positions of `size` of `labels`, class proportions intact (all of them if there are fewer)."""
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    (keep,) = remembered("subset", labels, (size, seed), lambda: (_draw_subset(labels, size, seed),))
    return keep


def _draw_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    if labels.ndim == 2:
        keep, _ = multilabel_train_test(labels, size / len(labels), seed, train_size=True)
        return keep

    keep, _ = train_test_split(np.arange(len(labels)), train_size=size, random_state=seed,
                               stratify=labels if size >= len(np.unique(labels)) else None)
    return np.sort(keep)
