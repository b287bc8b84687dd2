"""Mixup and CutMix (training/mixing.py): what each does to a batch, the loss and accuracy it implies,
repeatable draws, and a clear refusal where CutMix cannot apply."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import load_experiment
from cnnlab.errors import ConfigError, RunInterrupted
from cnnlab.studies import resume, run_experiment
from cnnlab.training.mixing import BatchMixer, MixedBatch, mixed_correct, mixed_loss
from conftest import interrupt_after
from test_birds import TINY


def _batch(n: int = 16, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return images, torch.arange(n)  # image k is filled with the value k and has label k


def test_mixup_blends_each_image_with_its_partner_by_the_drawn_weight():
    x, y = _batch()
    out = BatchMixer(mixup=0.4)(x, y, torch.Generator().manual_seed(0))
    assert 0.0 <= out.weight <= 1.0 and out.partner.shape == y.shape
    assert sorted(out.partner.tolist()) == y.tolist()  # a permutation of the batch
    expected = out.weight * y.float() + (1 - out.weight) * out.partner.float()
    assert torch.allclose(out.images[:, 0, 0, 0], expected)
    assert torch.allclose(out.images, out.images[:, :1, :1, :1].expand_as(out.images))  # uniform blend


def test_cutmix_pastes_one_box_of_the_partner_and_its_weight_is_the_area_kept():
    x, y = _batch(size=32)
    weights = []
    for seed in range(20):
        out = BatchMixer(cutmix=1.0)(x, y, torch.Generator().manual_seed(seed))
        own = out.images == y.view(-1, 1, 1, 1).float()
        pasted = out.images == out.partner.view(-1, 1, 1, 1).float()
        assert bool((own | pasted).all())  # every pixel is the image's own or its partner's
        moved = out.partner != y
        kept = own[moved].float().mean().item() if bool(moved.any()) else out.weight
        assert kept == pytest.approx(out.weight, abs=1e-6)
        weights.append(out.weight)
    assert min(weights) < 0.5 < max(weights)  # λ is drawn, not fixed


def test_the_same_generator_gives_the_same_mix_and_both_kinds_are_drawn_when_both_are_set():
    x, y = _batch(size=32)
    a = BatchMixer(mixup=0.2, cutmix=1.0)(x, y, torch.Generator().manual_seed(3))
    b = BatchMixer(mixup=0.2, cutmix=1.0)(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.partner, b.partner) and a.weight == b.weight
    kinds = set()
    for seed in range(30):
        out = BatchMixer(mixup=0.2, cutmix=1.0)(x, y, torch.Generator().manual_seed(seed))
        uniform = torch.allclose(out.images, out.images[:, :, :1, :1].expand_as(out.images))
        kinds.add("mixup" if uniform else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_the_loss_and_accuracy_weigh_the_two_labels():
    logits = torch.randn(6, 4)
    labels, partner = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([1, 1, 0, 2, 3, 0])
    batch = MixedBatch(torch.zeros(6, 3, 2, 2), partner, 0.7)
    expected = 0.7 * F.cross_entropy(logits, labels) + 0.3 * F.cross_entropy(logits, partner)
    assert mixed_loss(F.cross_entropy, logits, labels, batch).item() == pytest.approx(expected.item())
    predicted = torch.tensor([0, 1, 0, 2, 2, 2])
    assert float(mixed_correct(predicted, labels, batch)) == pytest.approx(0.7 * 2 + 0.3 * 3)
    assert mixed_loss(F.cross_entropy, logits, labels, None).item() == pytest.approx(
        F.cross_entropy(logits, labels).item())


def test_a_run_with_mixup_and_cutmix_trains_and_repeats_exactly(npz_data, tmp_path):
    def run(out: str) -> dict:
        cfg = load_experiment("cifar_recipe", overrides={
            "data.path": str(npz_data), "out": str(tmp_path / out), "seeds": [1], "train.epochs": 2,
            "train.batch_size": 32, "model_args.widths": [8, 16, 32], "device": "cpu", "train.tta": "off",
            "train.mixup": 0.2, "train.cutmix": 1.0})
        return json.loads((run_experiment(cfg, progress=False, log=lambda s: None) / "seed-1"
                           / "results.json").read_text())

    first, second = run("a"), run("b")
    assert first["test_acc"] == second["test_acc"] and first["test_loss"] == second["test_loss"]
    assert first["epochs_trained"] == 2


def test_cutmix_on_a_phase_of_cached_features_is_refused_before_training(birds_lab, tmp_path):
    cfg = load_experiment("birdnet_v1", overrides={**TINY, "data.path": str(birds_lab), "out": str(tmp_path / "runs"),
                                                   "train.epochs": 1, "train.cutmix": 1.0,
                                                   "train.feature_cache_dir": str(tmp_path / "fc")})
    with pytest.raises(ConfigError, match="train.cutmix .* cached features"):
        run_experiment(cfg, progress=False, log=lambda s: None)
    assert not (tmp_path / "fc").exists()  # refused before any feature was computed


def test_mix_prob_leaves_the_other_batches_as_they_are():
    x, y = _batch()
    outcomes = [BatchMixer(mixup=1.0, prob=0.5)(x, y, torch.Generator().manual_seed(seed)) for seed in range(40)]
    left = sum(out is None for out in outcomes)
    assert 5 < left < 35  # about half
    assert all(BatchMixer(mixup=1.0, prob=0.0)(x, y, torch.Generator().manual_seed(s)) is None for s in range(5))


def _metrics(seed_dir: Path) -> list[dict]:
    with open(seed_dir / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(handle)]


def test_an_interrupted_run_with_cutmix_and_mixup_resumes_exactly(npz_data, tmp_path):
    cfg = load_experiment("cifar_recipe", overrides={
        "data.path": str(npz_data), "out": str(tmp_path / "a"), "seeds": [1], "train.epochs": 3,
        "train.batch_size": 32, "model_args.widths": [8, 16, 32], "device": "cpu", "train.mixup": 0.2,
        "train.cutmix": 1.0, "train.mix_prob": 0.7})
    whole = run_experiment(cfg, progress=False, log=lambda s: None) / "seed-1"
    cfg.out = str(tmp_path / "b")
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=interrupt_after(1))
    (group,) = (tmp_path / "b" / cfg.experiment_name).iterdir()
    resume(group, progress=False, log=lambda s: None)
    a, b = (json.loads((f / "results.json").read_text()) for f in (whole, group / "seed-1"))
    assert (a["test_loss"], a["test_acc"]) == (b["test_loss"], b["test_acc"])
    assert _metrics(whole) == _metrics(group / "seed-1")  # the training loss and accuracy of every epoch too
