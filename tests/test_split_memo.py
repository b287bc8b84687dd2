"""Split draws remembered on disk: the same indices scikit-learn draws, without importing it again."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from cnnlab.data.images import ImageSet
from cnnlab.data.split import holdout_split, kfold_splits, stratified_subset_index
from cnnlab.fileio import cache_dir


def labelled(n_classes: int = 5, per_class: int = 30, seed: int = 0) -> ImageSet:
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))
    images = torch.arange(len(labels), dtype=torch.int64).reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2)
    return ImageSet(images.to(torch.uint8), torch.as_tensor(labels))


def memo_files() -> list:
    folder = cache_dir("splits")
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


def test_holdout_equals_sklearn_and_is_remembered():
    data = labelled()
    labels = data.labels.numpy()
    fit, val = holdout_split(data, 0.2, seed=3)
    want_fit, want_val = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=3, stratify=labels)
    assert torch.equal(val.labels, torch.as_tensor(labels[np.sort(want_val)]))
    assert torch.equal(fit.labels, torch.as_tensor(labels[np.sort(want_fit)]))
    assert len(memo_files()) == 1
    again_fit, again_val = holdout_split(data, 0.2, seed=3)
    assert torch.equal(again_val.images, val.images) and torch.equal(again_fit.images, fit.images)
    holdout_split(data, 0.2, seed=4)  # another seed is another draw
    assert len(memo_files()) == 2


def test_kfold_and_subset_equal_sklearn():
    data = labelled()
    labels = data.labels.numpy()
    for _ in range(2):  # drawn, then read back from the memo
        folds = kfold_splits(data, 3, seed=1)
        want = StratifiedKFold(3, shuffle=True, random_state=1).split(np.zeros(len(labels)), labels)
        for (fit, held), (want_fit, want_held) in zip(folds, want):
            assert torch.equal(held.labels, torch.as_tensor(labels[want_held]))
            assert torch.equal(fit.labels, torch.as_tensor(labels[want_fit]))
        keep = stratified_subset_index(labels, 40, seed=2)
        want_keep, _ = train_test_split(np.arange(len(labels)), train_size=40, random_state=2, stratify=labels)
        assert keep.tolist() == sorted(want_keep.tolist())


def test_a_damaged_memo_is_drawn_again():
    data = labelled()
    _, val = holdout_split(data, 0.2, seed=0)
    (memo,) = memo_files()
    memo.write_bytes(b"not an npz")
    _, again = holdout_split(data, 0.2, seed=0)
    assert torch.equal(again.images, val.images)
    np.savez(memo, a0=np.array([10 ** 6]), a1=np.array([0]))  # indices that cannot be this data's
    _, again = holdout_split(data, 0.2, seed=0)
    assert torch.equal(again.images, val.images)


def test_an_unwritable_cache_file_path_only_costs_the_memo(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNLAB_CACHE", str(blocker))  # splits/ cannot be made under a file, even as root
    _, val = holdout_split(labelled(), 0.2, seed=0)
    assert len(val) == 30


def test_a_remembered_split_does_not_import_sklearn(npz_data, tmp_path):
    probe = ("import json, sys\nfrom cnnlab.config import DataConfig\nfrom cnnlab.data import load_splits\n"
             f"s = load_splits(DataConfig(path={str(npz_data)!r}, val_fraction=0.25, subset=100))\n"
             "print(json.dumps({'sklearn': 'sklearn' in sys.modules, 'val': s.val.labels.tolist()}))")
    env = {**os.environ, "CNNLAB_CACHE": str(tmp_path / "shared-cache")}
    first, second = (json.loads(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                                               text=True, check=True).stdout) for _ in range(2))
    assert first["sklearn"] and not second["sklearn"]
    assert first["val"] == second["val"]
