"""Which classes fail and why: checked against scikit-learn and against data built to fail one way."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from cnnlab.cli.main import main
from cnnlab.config import load_experiment
from cnnlab.data import load_splits
from cnnlab.inference import load_trained
from cnnlab.inference.gradcam import gradcam
from cnnlab.reporting.interpretation import confusion, most_confused, per_class, top_losses
from cnnlab.studies import run_experiment


def test_confusion_and_per_class_equal_scikit_learn():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    predictions[:100] = labels[:100]
    matrix = confusion(labels, predictions, 6)  # class 5 never occurs: a zero row and column
    assert np.array_equal(matrix, confusion_matrix(labels, predictions, labels=range(6)))
    names = [f"c{i}" for i in range(6)]
    rows = per_class(matrix, names)
    p, r, f, s = precision_recall_fscore_support(labels, predictions, labels=range(6), zero_division=0)
    assert [row["precision"] for row in rows] == pytest.approx(p)
    assert [row["recall"] for row in rows] == pytest.approx(r)
    assert [row["f1"] for row in rows] == pytest.approx(f)
    assert [row["support"] for row in rows] == list(s)
    pairs = most_confused(matrix, names, k=3)
    off = matrix - np.diag(np.diag(matrix))
    assert [p["count"] for p in pairs] == sorted(off.flatten(), reverse=True)[:3]


def test_top_losses_are_the_largest_per_sample_cross_entropies():
    logits, labels = torch.randn(50, 4, generator=torch.Generator().manual_seed(1)), torch.arange(50) % 4
    losses = F.cross_entropy(logits, labels, reduction="none").numpy()
    assert list(top_losses(losses, 7)) == list(np.argsort(-losses)[:7])


def _twins_npz(root: Path) -> Path:
    """Four classes; classes 2 and 3 share the very same images: no model can tell them apart."""
    root.mkdir()
    rng = np.random.default_rng(0)
    names = np.array(["red", "green", "twin_a", "twin_b"])
    for split, count in (("train", 40), ("test", 20)):
        base = rng.integers(0, 50, (3, count, 32, 32, 3), dtype=np.uint8)
        for k in range(3):
            base[k, :, :, :, k] = 220
        images = np.concatenate([base[0], base[1], base[2], base[2]])
        labels = np.repeat(np.arange(4), count)
        np.savez(root / f"{split}.npz", images=images, labels=labels, class_names=names)
    return root


def _read_matrix(path: Path) -> np.ndarray:
    rows = list(csv.reader(path.read_text().splitlines()))
    return np.array([[int(v) for v in row[1:]] for row in rows[1:]])


def test_identical_classes_end_up_confused_in_their_cell(tmp_path):
    data = _twins_npz(tmp_path / "twins")
    cfg = load_experiment("basenet", overrides={"data.path": str(data), "train.epochs": 6, "seeds": [1, 2],
                                                "train.batch_size": 16, "device": "cpu", "out": str(tmp_path)})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    seed = folder / "seed-1"
    matrix = _read_matrix(seed / "confusion_matrix.csv")
    assert matrix.sum() == 80 == json.loads((seed / "results.json").read_text())["num_test"]
    assert matrix[2, 3] + matrix[3, 2] >= 16  # the twins are confused with each other ...
    assert matrix[:2, 2:].sum() + matrix[2:, :2].sum() <= 4  # ... and hardly with anything else
    pair = list(csv.DictReader((seed / "most_confused.csv").read_text().splitlines()))[0]
    assert {pair["true"], pair["predicted"]} == {"twin_a", "twin_b"}
    results = json.loads((seed / "results.json").read_text())
    assert np.trace(matrix) / 80 == pytest.approx(results["test_acc"])
    # the experiment folder pools the seeds
    pooled = _read_matrix(folder / "confusion_matrix.csv")
    assert np.array_equal(pooled, matrix + _read_matrix(folder / "seed-2" / "confusion_matrix.csv"))
    for name in ("confusion_matrix.png", "top_losses.png"):
        assert (seed / name).read_bytes()[:4] == b"\x89PNG"
    # top losses: the largest per-sample cross-entropies of the saved model on the test split
    trained = load_trained(seed)
    test = load_splits(cfg.data).test
    with torch.no_grad():
        logits = trained.model(trained.preprocess(test.images))
    losses = F.cross_entropy(logits, test.labels, reduction="none").numpy()
    chosen = [int(r["test_index"]) for r in csv.DictReader((seed / "top_losses.csv").read_text().splitlines())]
    assert chosen == list(np.argsort(-losses, kind="stable")[:len(chosen)])
    # `cnnlab interpret` recomputes the same files for the finished run
    (seed / "confusion_matrix.csv").unlink()
    assert main(["interpret", str(folder), "--gradcam", "4"]) == 0
    assert np.array_equal(_read_matrix(seed / "confusion_matrix.csv"), matrix)
    assert (seed / "gradcam.png").read_bytes()[:4] == b"\x89PNG"


def _quadrant_npz(root: Path) -> Path:
    """The class is the quadrant that holds a bright patch; the rest is noise."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 480), ("test", 80)):
        images = rng.integers(0, 90, (n, 32, 32, 3), dtype=np.uint8)
        labels = np.arange(n) % 4
        for image, label in zip(images, labels):
            top, left = 16 * (label // 2) + int(rng.integers(2, 8)), 16 * (label % 2) + int(rng.integers(2, 8))
            image[top:top + 6, left:left + 6] = 255
        np.savez(root / f"{split}.npz", images=images, labels=labels,
                 class_names=np.array(["top-left", "top-right", "bottom-left", "bottom-right"]))
    return root


def test_gradcam_peaks_in_the_quadrant_that_decides_the_class(tmp_path):
    data = _quadrant_npz(tmp_path / "quadrants")
    cfg = load_experiment("basenet", overrides={"data.path": str(data), "train.epochs": 8, "seeds": [1],
                                                "train.batch_size": 32, "device": "cpu", "out": str(tmp_path)})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    trained = load_trained(folder)
    test = load_splits(cfg.data).test
    maps, _ = gradcam(trained, test.images, target=test.labels)
    peaks = maps.flatten(1).argmax(1)
    rows, cols = peaks // 32, peaks % 32
    quadrant = (rows >= 16).long() * 2 + (cols >= 16).long()
    assert float((quadrant == test.labels).float().mean()) >= 0.9
