"""Training end to end on an easy generated task, and the run folder it leaves behind."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.config import load_experiment
from cnnlab.data import load_splits
from cnnlab.models import create_model
from cnnlab.studies import run_experiment
from cnnlab.training import train_seed

RUN_FILES = {"config.yaml", "environment.json", "model.txt", "metrics.csv", "checkpoint.pt",
             "model.safetensors", "results.json", "curves.png", "status.json"}


def tiny_cfg(npz_data, tmp_path, **overrides):
    base = {"data.path": str(npz_data), "train.epochs": 8, "train.batch_size": 16, "seeds": [1],
            "out": str(tmp_path / "runs"), "device": "cpu"}
    return load_experiment("basenet", overrides={**base, **overrides})


def test_short_training_clearly_beats_chance(npz_data, tmp_path):
    cfg = tiny_cfg(npz_data, tmp_path)
    splits = load_splits(cfg.data)
    folder = tmp_path / "one"
    folder.mkdir()
    results = train_seed(cfg, folder, splits, seed=1, progress=False, log=lambda s: None)
    assert results["test_acc"] >= 0.75  # chance is 0.25 on 4 classes
    assert results["test_loss"] < 1.0
    assert RUN_FILES <= {p.name for p in folder.iterdir()}


def test_same_seed_same_run_different_seed_different_run(npz_data, tmp_path):
    cfg = tiny_cfg(npz_data, tmp_path, **{"train.epochs": 2})
    splits = load_splits(cfg.data)
    out = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        (tmp_path / name).mkdir()
        out.append(train_seed(cfg, tmp_path / name, splits, seed=seed, progress=False, log=lambda s: None))
    assert out[0]["test_loss"] == out[1]["test_loss"]
    assert out[0]["test_loss"] != out[2]["test_loss"]


def test_experiment_folder_is_complete_and_never_reused(npz_data, tmp_path):
    cfg = tiny_cfg(npz_data, tmp_path, **{"train.epochs": 2, "seeds": [1, 2]})
    lines = []
    group = run_experiment(cfg, progress=False, log=lines.append)
    group2 = run_experiment(cfg, progress=False, log=lambda s: None)
    assert group != group2 and group.parent == group2.parent
    assert {"experiment.yaml", "results.csv", "summary.json", "summary.md", "seed-1", "seed-2", "curves.png",
            "confusion_matrix.csv"} <= {p.name for p in group.iterdir()}
    title = (group / "summary.md").read_text().splitlines()[0]
    assert "basenet" in title and "npz (4 classes)" in title and "2 epochs" in title and "cpu" in title
    summary = json.loads((group / "summary.json").read_text())
    runs = [json.loads((group / f"seed-{s}" / "results.json").read_text()) for s in (1, 2)]
    assert summary["runs"] == runs
    assert summary["test_acc_mean"] == pytest.approx((runs[0]["test_acc"] + runs[1]["test_acc"]) / 2, abs=1e-12)
    assert summary["test_acc_std"] == pytest.approx(abs(runs[0]["test_acc"] - runs[1]["test_acc"]) / 2 ** 0.5,
                                                    abs=1e-12)
    assert summary["lab"] is None  # npz files are not the lab's data: no reference (test_tables: when it is)
    for seed in (1, 2):
        folder = group / f"seed-{seed}"
        assert RUN_FILES <= {p.name for p in folder.iterdir()}
        results = json.loads((folder / "results.json").read_text())
        assert {"test_acc", "test_loss", "seed", "epochs", "wall_time_s"} <= set(results)
        assert results["seed"] == seed and results["epochs"] == 2
        rows = list(csv.DictReader(open(folder / "metrics.csv")))
        assert [int(r["epoch"]) for r in rows] == [1, 2]
        assert all(r["val_acc"] != "" for r in rows)
        env = json.loads((folder / "environment.json").read_text())
        assert env["seed"] == seed and "torch" in env
        assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # weights load without unpickling, into a fresh model
        model = create_model("basenet", num_classes=4)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert state["epoch"] == 2 and state["model_name"] == "basenet"
    table = "\n".join(lines)
    assert "mean ± std" in table and "41.36 %" not in table  # no lab row: npz files are not the lab's data
