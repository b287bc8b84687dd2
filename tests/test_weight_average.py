"""train.ema (a moving average of the weights), layer-wise learning-rate decay, the CPU allocator."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab.config import PhaseConfig, TrainConfig, load_experiment
from cnnlab.data import load_splits
from cnnlab.errors import CheckpointError, ConfigError, RunInterrupted
from cnnlab.inference import load_trained
from cnnlab.models import create_model
from cnnlab.studies import resume, run_experiment
from cnnlab.training.allocator import keep_freed_memory
from cnnlab.training.ema import WeightAverage
from cnnlab.training.phases import apply_phase
from conftest import interrupt_after


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_the_average_follows_the_weights_with_a_warming_up_decay():
    model = _tiny()
    average = WeightAverage(model, decay=0.9)
    model[0].weight.requires_grad_(False)  # a frozen parameter stays as it is in both
    average.track(model)
    start = {k: v.clone() for k, v in average.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(2.0)
        model[1].num_batches_tracked.add_(7)
    average.update()  # d = min(0.9, 1/10) = 0.1: the average moves 90 % of the way
    now = average.module.state_dict()
    assert torch.allclose(now["2.weight"], start["2.weight"] + 0.9)
    assert torch.allclose(now["1.running_mean"], start["1.running_mean"] + 1.8)  # float buffers averaged
    assert int(now["1.num_batches_tracked"]) == 7  # integer buffers copied
    assert torch.equal(now["0.weight"], start["0.weight"])  # not tracked: frozen in this phase
    assert average.current_decay() == pytest.approx(min(0.9, 2 / 11))
    for _ in range(200):
        average.update()
    assert average.current_decay() == 0.9
    assert not any(p.requires_grad for p in average.module.parameters())


def test_update_before_track_is_an_error_not_a_silent_no_op():
    with pytest.raises(RuntimeError, match="track"):
        WeightAverage(_tiny(), decay=0.9).update()


def test_ema_decay_must_lie_below_one():
    with pytest.raises(ConfigError, match="train.ema"):
        load_experiment("basenet", overrides={"train.ema": 1.0})


# A linear probe on cached features, then everything: the average spans both phases.
PROBE_THEN_TUNE = {"model": "basenet_pp", "train.batch_size": 32, "device": "cpu", "seeds": [5], "train.ema": 0.9,
                   "preprocess.augment.hflip": True, "preprocess.normalize": "featurewise", "seeds_together": "off",
                   "train.phases": [{"name": "probe", "epochs": 2, "trainable": ["head"], "augment": False},
                                    {"name": "all", "epochs": 2, "trainable": ["all"], "lr": 5e-4}]}


def test_the_average_is_what_is_tested_and_saved_and_it_resumes_exactly(npz_data, tmp_path):
    overrides = {**PROBE_THEN_TUNE, "data.path": str(npz_data), "train.feature_cache_dir": str(tmp_path / "fc")}
    cfg = load_experiment("basenet", overrides={**overrides, "out": str(tmp_path / "a")})
    whole = run_experiment(cfg, progress=False, log=lambda s: None) / "seed-5"
    results = json.loads((whole / "results.json").read_text())
    saved = load_file(str(whole / "model.safetensors"))
    checkpoint = torch.load(whole / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(saved[k], checkpoint["ema"]["model"][k]) for k in saved)
    assert not all(torch.equal(saved[k], checkpoint["model"][k]) for k in checkpoint["model"])
    trained, splits = load_trained(whole / "model.safetensors"), load_splits(cfg.data)
    right = sum(int((trained.probabilities(x).argmax(1) == y).sum()) for x, y in splits.test.batches(100))
    assert results["test_acc"] == pytest.approx(right / len(splits.test), abs=1e-12)

    cfg.out = str(tmp_path / "b")
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=interrupt_after(3))  # inside the second phase
    (group,) = (tmp_path / "b" / cfg.experiment_name).iterdir()
    resume(group, progress=False, log=lambda s: None)
    again = json.loads((group / "seed-5" / "results.json").read_text())
    assert (again["test_loss"], again["test_acc"]) == (results["test_loss"], results["test_acc"])
    resumed = load_file(str(group / "seed-5" / "model.safetensors"))
    assert all(torch.equal(saved[k], resumed[k]) for k in saved)


def test_resuming_an_ema_experiment_from_a_checkpoint_without_an_average_is_refused(npz_data, tmp_path):
    overrides = {**PROBE_THEN_TUNE, "train.ema": 0.0, "data.path": str(npz_data), "out": str(tmp_path),
                 "train.feature_cache_dir": str(tmp_path / "fc")}
    cfg = load_experiment("basenet", overrides=overrides)
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=interrupt_after(1))
    (group,) = (tmp_path / cfg.experiment_name).iterdir()
    recorded = group / "experiment.yaml"
    recorded.write_text(recorded.read_text().replace("ema: 0.0", "ema: 0.9"))
    with pytest.raises(CheckpointError, match="train.ema"):
        resume(group, progress=False, log=lambda s: None)


def test_layer_wise_decay_gives_each_backbone_stage_its_rate():
    model = create_model("birdnet_v0", num_classes=5, backbone="efficientnet_lite0", weights="none")
    tc = TrainConfig()
    phase = PhaseConfig(name="ft", trainable=["all"], lr=1.0, backbone_lr_mult=0.5, backbone_lr_decay=0.8)
    optimizer, _, _ = apply_phase(model, phase, tc.optimizer, tc, steps_per_epoch=1)
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    stages = [n for n, c in model.backbone.named_children() if any(True for _ in c.parameters())]
    assert rates["head"] == 1.0 and rates[f"backbone.{stages[-1]}"] == 0.5
    for depth, stage in enumerate(reversed(stages)):
        assert rates[f"backbone.{stage}"] == pytest.approx(0.5 * 0.8 ** depth)
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()) and len(set(grouped)) == len(grouped)

    partial = PhaseConfig(name="top", trainable=["backbone.stage6", "head"], lr=1.0, backbone_lr_decay=0.5)
    optimizer, _, _ = apply_phase(model, partial, tc.optimizer, tc, steps_per_epoch=1)
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates == {"head": 1.0, "backbone.stage6": 0.25, "backbone.stage7": 0.5, "backbone.head": 1.0}


def test_the_cpu_allocator_tuning_applies_once_and_can_be_turned_off(monkeypatch):
    expected = sys.platform.startswith("linux")
    script = "from cnnlab.training.allocator import keep_freed_memory as k; print(k(), k())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(expected)] * 2
    monkeypatch.setenv("CNNLAB_MALLOC", "system")
    assert keep_freed_memory.__wrapped__() is False
