"""Seeds trained together equal seeds trained alone, and survive Ctrl-C like any run.

A run takes the same number of threads alone or together (`train.threads`; auto gives BaseNet
one), its generators are seeded the same way, and it runs the same code: the numbers come out
equal. The tolerance below (1e-6 relative) only allows for the text round trip of metrics.csv;
a different thread count would not pass it: CPU BatchNorm's reductions depend on the thread
count, and Adam's first steps amplify that to ~3e-4 relative after one epoch of BaseNet++.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab.config import load_experiment
from cnnlab.errors import ConfigError
from cnnlab.studies import run_experiment

RTOL = 1e-6


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(f)]


def assert_same_runs(a: Path, b: Path, seeds) -> None:
    for seed in seeds:
        rows_a, rows_b = metrics(a / f"seed-{seed}"), metrics(b / f"seed-{seed}")
        assert len(rows_a) == len(rows_b) > 0
        for row_a, row_b in zip(rows_a, rows_b):
            assert row_a["epoch"] == row_b["epoch"] and row_a["phase"] == row_b["phase"]
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                if row_a[key] != "":
                    assert float(row_a[key]) == pytest.approx(float(row_b[key]), rel=RTOL), (seed, key)
        result_a = json.loads((a / f"seed-{seed}" / "results.json").read_text())
        result_b = json.loads((b / f"seed-{seed}" / "results.json").read_text())
        assert result_a["test_acc"] == pytest.approx(result_b["test_acc"], abs=1e-9)
        assert result_a["test_loss"] == pytest.approx(result_b["test_loss"], rel=RTOL)


def run_both(name: str, overrides: dict, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    lines: list[str] = []
    together = run_experiment(load_experiment(name, overrides={**overrides, "seeds_together": "on",
                                                              "out": str(tmp_path / "together")}),
                              progress=False, log=lines.append)
    alone = run_experiment(load_experiment(name, overrides={**overrides, "seeds_together": "off",
                                                           "out": str(tmp_path / "alone")}),
                           progress=False, log=lambda s: None)
    return together, alone, lines


@pytest.mark.parametrize("name", ["basenet", "basenet_pp"])  # basenet_pp: augmentation, BatchNorm, dropout
def test_seeds_together_equal_seeds_alone(name, npz_data, tmp_path):
    # one thread a run, as each worker gets on 2 cores (the same number alone: see the module's note)
    overrides = {"data.path": str(npz_data), "train.epochs": 2, "seeds": [1, 2], "device": "cpu",
                 "train.threads": 1, "data.subset": 64}
    together, alone, lines = run_both(name, overrides, tmp_path)
    assert any(line.startswith("training 2 seeds together: 2 processes × 1 thread(s)") for line in lines)
    assert_same_runs(together, alone, (1, 2))
    summary = json.loads((together / "summary.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [1, 2]


def test_a_two_phase_birdnet_together_equals_alone(birds_lab, tmp_path):
    overrides = {"data.path": str(birds_lab), "data.image_size": 64, "data.workers": 0,
                 "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none", "device": "cpu",
                 "seeds": [1, 2], "train.batch_size": 4, "train.phases.0.epochs": 1, "train.phases.1.epochs": 1,
                 "train.feature_cache_dir": str(tmp_path / "cache"), "train.threads": 1}
    together, alone, _ = run_both("birdnet_v4", overrides, tmp_path)
    assert_same_runs(together, alone, (1, 2))


def test_auto_trains_small_in_memory_models_together_on_2_cores_or_more(npz_data, birds_lab, monkeypatch):
    from cnnlab.studies import parallel
    from cnnlab.studies.experiment import load_data, model_macs

    monkeypatch.delenv("CNNLAB_SEEDS_TOGETHER")  # the suite's default (conftest): auto's own rule here
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data)})
    splits = load_data(cfg, log=lambda s: None)
    small = lambda: model_macs(cfg, splits)  # noqa: E731
    assert small() < parallel.SMALL_MODEL_MACS  # BaseNet: 0.6 M multiply-adds an image
    pp = load_experiment("basenet_pp", overrides={"data.path": str(npz_data)})
    assert model_macs(pp, splits) > parallel.SMALL_MODEL_MACS  # BaseNet++: 161 M, one run fills the cores
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 8)
    assert parallel.plan(3) == (3, 2) and parallel.plan(16) == (16, 1) and parallel.plan(40) == (16, 1)
    assert parallel.plan(3, 4) == (2, 4)
    assert parallel.wins(cfg, splits, 3, "cpu", small)
    assert not parallel.wins(pp, splits, 3, "cpu", lambda: model_macs(pp, splits))
    assert not parallel.wins(cfg, splits, 1, "cpu", small)
    # a GPU: images in memory train together whatever the model's size (measured on an H200)
    assert parallel.wins(cfg, splits, 3, "cuda", small) and parallel.wins(pp, splits, 3, "cuda", small)
    birds = load_experiment("birdnet_v0", overrides={"data.path": str(birds_lab), "data.image_size": 64})
    bird_splits = load_data(birds, log=lambda s: None)
    assert not parallel.wins(birds, bird_splits, 3, "cpu", small)  # streamed photos
    assert not parallel.wins(birds, bird_splits, 3, "cuda", small)
    cfg.seeds_together = "off"
    assert not parallel.wins(cfg, splits, 3, "cpu", small)
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 2)  # measured: 3 single-threaded workers win on 2 cores
    cfg.seeds_together = "auto"
    assert parallel.wins(cfg, splits, 3, "cpu", small) and parallel.plan(3) == (3, 1)
    assert parallel.plan(2) == (2, 1) and parallel.plan(9) == (4, 1) and parallel.plan(3, 2) == (1, 2)
    assert not parallel.wins(pp, splits, 3, "cpu", lambda: model_macs(pp, splits))
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 1)  # one core: nothing to share out
    assert not parallel.wins(cfg, splits, 3, "cpu", small)
    cfg.seeds_together = "on"
    assert parallel.wins(cfg, splits, 3, "cpu", small)
    # $CNNLAB_SEEDS_TOGETHER is auto's answer, when set; a value said in the configuration wins over it
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 2)
    cfg.seeds_together = "auto"
    monkeypatch.setenv("CNNLAB_SEEDS_TOGETHER", "off")
    assert not parallel.wins(cfg, splits, 3, "cpu", small)
    monkeypatch.setenv("CNNLAB_SEEDS_TOGETHER", "on")
    assert parallel.wins(pp, splits, 3, "cpu", lambda: model_macs(pp, splits))
    cfg.seeds_together = "off"
    assert not parallel.wins(cfg, splits, 3, "cpu", small)
    cfg.seeds_together = "auto"
    monkeypatch.setenv("CNNLAB_SEEDS_TOGETHER", "sometimes")
    with pytest.raises(ConfigError, match=r"\$CNNLAB_SEEDS_TOGETHER='sometimes': expected auto, on or off"):
        parallel.wins(cfg, splits, 3, "cpu", small)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_seeds_together_run_resumes_exactly(how, npz_data, tmp_path):
    common = ["--data", str(npz_data), "--seeds", "1", "2", "--device", "cpu", "--no-progress",
              "--set", "data.subset=160", "--epochs", "6", "--set", "train.threads=1"]
    process = _start(["run", "basenet", *common, "--seeds-together", "on", "--out", str(tmp_path / "t")], tmp_path)
    deadline = time.time() + 240
    for line in process.stdout:  # wait until both seeds have saved an epoch
        if "[seed-2] epoch   2/" in line or time.time() > deadline:
            break
    if how == "ctrl-c":  # the terminal signals every process of the group
        os.killpg(process.pid, signal.SIGINT)
    else:  # a batch system stops the parent only; the workers must hear of it from the parent
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 130, err
    (folder,) = (tmp_path / "t" / "basenet").iterdir()
    assert f"cnnlab resume {folder}" in err
    states = {json.loads((folder / s / "status.json").read_text())["state"] for s in ("seed-1", "seed-2")}
    assert states <= {"interrupted", "finished"} and "interrupted" in states
    if how == "ctrl-c":  # the resume below is the same for both ways of stopping
        return
    resumed = subprocess.run([sys.executable, "-m", "cnnlab", "resume", str(folder), "--no-progress"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    alone = run_experiment(load_experiment("basenet", overrides={
        "data.path": str(npz_data), "seeds": [1, 2], "device": "cpu", "data.subset": 160, "train.epochs": 6,
        "train.threads": 1,
        "seeds_together": "off", "out": str(tmp_path / "alone")}), progress=False, log=lambda s: None)
    assert_same_runs(folder, alone, (1, 2))
