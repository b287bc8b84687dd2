"""Imbalanced classes: balanced accuracy and macro-F1 as scikit-learn computes them, class weights and
class-aware sampling that help on a long-tailed class folder, samplers that repeat, resume and shard exactly."""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, f1_score

from cnnlab.config import load_experiment
from cnnlab.data.batches import batch_indices, epoch_generator
from cnnlab.errors import RunInterrupted
from cnnlab.studies import resume, run_experiment
from cnnlab.training.imbalance import class_weights, epoch_order, imbalance_note, sampling_weights
from cnnlab.training.scores import scores
from conftest import interrupt_after


def long_tailed_folder(root: Path, classes: int = 10, largest: int = 200, smallest: int = 5, seed: int = 0) -> list[int]:
    """Class folders of 16×16 PNGs, 200 → 5 images (geometric). Each class is a colour on a circle, the
    colours of neighbours overlapping, so an unweighted loss gives the overlap to the frequent class."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, classes, endpoint=False)
    counts = []
    for c in range(classes):
        n = round(largest * (smallest / largest) ** (c / (classes - 1)))
        counts.append(n)
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(n):
            centre = np.array([np.cos(angles[c]), np.sin(angles[c])]) + rng.normal(0, 0.315, 2)
            rgb = np.clip(128 + 90 * np.array([centre[0], centre[1], 0.0]), 0, 255)
            pixels = np.clip(rgb + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return counts


@pytest.fixture(scope="module")
def long_tail(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("long-tail") / "photos"
    assert long_tailed_folder(root) == [200, 133, 88, 58, 39, 26, 17, 11, 8, 5]
    return root


def lt_cfg(data: Path, out: Path, **overrides):
    return load_experiment("basenet", overrides={"data.path": str(data), "train.epochs": 15, "train.batch_size": 16,
                                                 "seeds": [1, 2], "device": "cpu", "data.workers": 0,
                                                 "out": str(out), **overrides})


def test_scores_equal_scikit_learns_on_any_predictions():
    rng = np.random.default_rng(0)
    for trial in range(200):
        classes = int(rng.integers(2, 8))
        true = rng.integers(0, classes, int(rng.integers(1, 40)))
        predicted = np.where(rng.random(len(true)) < 0.5, true, rng.integers(0, classes, len(true)))
        matrix = np.bincount(true * classes + predicted, minlength=classes ** 2).reshape(classes, classes)
        ours = scores(matrix)
        # scikit-learn warns where a class is never predicted or never true; zero_division=0 is its value then
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert ours["bal_acc"] == pytest.approx(balanced_accuracy_score(true, predicted), abs=1e-12)
            assert ours["macro_f1"] == pytest.approx(f1_score(true, predicted, average="macro", zero_division=0),
                                                     abs=1e-12)
        assert ours["acc"] == pytest.approx(float(np.mean(true == predicted)))


@pytest.fixture(scope="module")
def three_runs(long_tail, tmp_path_factory):
    """The long tail trained three ways, 2 seeds each: no remedy, balanced class weights, the balanced sampler."""
    out = tmp_path_factory.mktemp("runs")
    folders = {}
    for name, extra in (("none", {}), ("weights", {"train.class_weights": "balanced"}),
                        ("sampler", {"data.sampler": "balanced"})):
        folders[name] = run_experiment(lt_cfg(long_tail, out / name, **extra), progress=False, log=lambda s: None)
    return folders


def test_results_give_balanced_accuracy_and_macro_f1_of_the_saved_predictions(three_runs):
    folder = three_runs["none"]
    for seed in (1, 2):
        results = json.loads((folder / f"seed-{seed}" / "results.json").read_text())
        rows = list(csv.DictReader((folder / f"seed-{seed}" / "test_predictions.csv").read_text().splitlines()))
        assert len(rows) == results["num_test"]
        true, predicted = [r["true"] for r in rows], [r["predicted"] for r in rows]
        assert results["test_acc"] == pytest.approx(np.mean([t == p for t, p in zip(true, predicted)]), abs=1e-12)
        assert results["test_bal_acc"] == pytest.approx(balanced_accuracy_score(true, predicted), abs=1e-12)
        assert results["test_macro_f1"] == pytest.approx(
            f1_score(true, predicted, average="macro", zero_division=0), abs=1e-12)
        assert results["test_bal_acc"] < results["test_acc"]  # the rare classes fail: plain accuracy hides it
        metrics = list(csv.DictReader((folder / f"seed-{seed}" / "metrics.csv").read_text().splitlines()))
        assert {"val_bal_acc", "val_macro_f1"} <= set(metrics[0]) and all(r["val_bal_acc"] for r in metrics)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["test_bal_acc_mean"] == pytest.approx(np.mean([r["test_bal_acc"] for r in summary["runs"]]))
    table = (folder / "summary.md").read_text()
    assert "balanced accuracy" in table and "macro-F1" in table


def test_class_weights_and_the_balanced_sampler_each_raise_balanced_accuracy(three_runs):
    # Calibrated on this generator (2 seeds each): none 44.4 / 48.6 %, weights 55.9 / 59.3 %, sampler
    # 59.3 / 58.6 % balanced accuracy. The test split holds 117 images, the rarest classes one or two each,
    # so one image moves a class's recall by 50 points and balanced accuracy by up to 5: a margin of
    # 5 points on the mean of two seeds is beyond that noise and well under the gains measured.
    def mean_balanced(name: str) -> float:
        return json.loads((three_runs[name] / "summary.json").read_text())["test_bal_acc_mean"]

    assert mean_balanced("weights") > mean_balanced("none") + 0.05
    assert mean_balanced("sampler") > mean_balanced("none") + 0.05


def test_the_run_names_an_imbalanced_split_once(long_tail, tmp_path):
    lines = []
    run_experiment(lt_cfg(long_tail, tmp_path / "runs", **{"train.epochs": 1, "seeds": [1]}), progress=False,
                   log=lines.append)
    notes = [l for l in lines if "imbalanced" in l]
    assert len(notes) == 1 and "class09 (4)" in notes[0] and "smallest" in notes[0]
    labels = torch.tensor([0] * 10 + [1] * 4)  # 2.5×: not said
    assert imbalance_note(labels, ["a", "b"]) is None


def test_sampler_frequencies_follow_their_target():
    labels = torch.tensor([0] * 800 + [1] * 150 + [2] * 50)
    for mode, target in (("balanced", [1 / 3] * 3), ("sqrt", np.sqrt([800, 150, 50]) / np.sqrt([800, 150, 50]).sum())):
        drawn = torch.cat([epoch_order(labels, mode, 3, epoch_generator(1, e)) for e in range(1, 11)])
        freq = np.bincount(labels[drawn].numpy(), minlength=3) / len(drawn)
        # 10 epochs × 1,000 draws: a share's standard error is at most 0.5 %; 2 % is four of them
        assert np.allclose(freq, target, atol=0.02), (mode, freq, target)
        assert len(drawn) == 10 * len(labels)
    assert epoch_order(labels, "uniform", 3, epoch_generator(1, 1)) is None
    assert float(sampling_weights(labels, "balanced", 3).sum()) == pytest.approx(1.0)
    # the same (seed, epoch) draws the same images; another epoch others
    assert torch.equal(epoch_order(labels, "balanced", 3, epoch_generator(3, 4)),
                       epoch_order(labels, "balanced", 3, epoch_generator(3, 4)))
    assert not torch.equal(epoch_order(labels, "balanced", 3, epoch_generator(3, 4)),
                           epoch_order(labels, "balanced", 3, epoch_generator(3, 5)))


def test_sampled_batches_shard_disjointly_over_processes():
    labels = torch.tensor([0] * 90 + [1] * 10)
    order = epoch_order(labels, "balanced", 2, epoch_generator(1, 1))
    world = 4
    shards = [batch_indices(len(labels), 16, shuffle=True, generator=None, shard=(rank, world), order=order)
              for rank in range(world)]
    # positions rank, rank+4, ... of each global batch: together every position of the order exactly once
    for step in range(len(shards[0])):
        together = torch.cat([shards[rank][step] for rank in range(world)]).sort().values
        assert torch.equal(together, order[16 * step:16 * (step + 1)].sort().values)
    assert len({len(s) for s in shards}) == 1  # the same number of steps on every process


def test_class_weights_by_rule():
    counts = torch.tensor([100, 10, 0, 1])
    balanced = class_weights(counts, "balanced")
    assert balanced.tolist() == pytest.approx([111 / 300, 111 / 30, 0.0, 111 / 3])
    effective = class_weights(counts, "effective", beta=0.9)
    expected = np.array([(1 - 0.9) / (1 - 0.9 ** n) if n else 0 for n in (100, 10, 0, 1)])
    assert effective.tolist() == pytest.approx((expected * 3 / expected.sum()).tolist())
    assert class_weights(counts, "none") is None


def test_a_run_with_the_sampler_and_weights_resumes_exactly(long_tail, tmp_path):
    overrides = {"train.epochs": 4, "seeds": [1], "data.sampler": "sqrt", "train.class_weights": "effective",
                 "train.keep_best": "val_bal_acc"}
    whole = run_experiment(lt_cfg(long_tail, tmp_path / "whole", **overrides), progress=False, log=lambda s: None)
    with pytest.raises(RunInterrupted):
        run_experiment(lt_cfg(long_tail, tmp_path / "cut", **overrides), progress=False, log=interrupt_after(2))
    cut = next((tmp_path / "cut" / "basenet").iterdir())
    resume(cut, progress=False, log=lambda s: None)
    assert (cut / "seed-1" / "metrics.csv").read_text().count("\n") == 5
    columns = ("train_loss", "train_acc", "val_loss", "val_bal_acc", "val_macro_f1")
    read = lambda f: [{k: r[k] for k in columns} for r in csv.DictReader((f / "seed-1" / "metrics.csv").open())]  # noqa: E731
    assert read(cut) == read(whole)
    a, b = (json.loads((f / "seed-1" / "results.json").read_text()) for f in (whole, cut))
    assert (a["test_acc"], a["test_bal_acc"], a["kept_epoch"]) == (b["test_acc"], b["test_bal_acc"], b["kept_epoch"])


def test_bad_values_of_the_new_keys_are_one_line(long_tail, tmp_path, capsys):
    from cnnlab.cli.main import main

    for option, fragment in ((["--set", "data.sampler=rare"], "key 'data.sampler': expected one of uniform"),
                             (["--set", "train.class_weights=inverse"], "key 'train.class_weights': expected one of"),
                             (["--set", "train.class_weights_beta=1.0"], "train.class_weights_beta"),
                             (["--set", "train.keep_best=val_f1"], "expected one of off, val_loss, val_acc, "
                                                                   "val_bal_acc, val_macro_f1")):
        assert main(["run", "basenet", "--data", str(long_tail), *option]) == 2
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
