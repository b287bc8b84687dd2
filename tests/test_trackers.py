"""TensorBoard and MLflow receive what metrics.csv holds, each epoch once, also across a resume."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import interrupt_after

from cnnlab.config import load_experiment
from cnnlab.errors import ConfigError, RunInterrupted
from cnnlab.studies import resume, run_experiment
from cnnlab.training.trackers import SCALARS


def metrics_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def interrupted_then_resumed(npz_data: Path, tmp_path: Path, tracker: str) -> Path:
    # one process, so that the log function's Ctrl-C lands mid-run (seeds together: the test below)
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 4, "seeds": [1, 2],
                                                "device": "cpu", "out": str(tmp_path / "runs"),
                                                "log.trackers": [tracker], "seeds_together": "off"})
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=interrupt_after(2))
    (folder,) = (tmp_path / "runs" / "basenet").iterdir()
    resume(folder, device="cpu", progress=False, log=lambda s: None)
    return folder


def test_tensorboard_events_equal_metrics_csv_after_a_resume(npz_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = interrupted_then_resumed(npz_data, tmp_path, "tensorboard")
    for seed in (1, 2):
        run = folder / f"seed-{seed}"
        rows = metrics_rows(run)
        assert len(rows) == 4
        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        for column, tag in SCALARS.items():
            if rows[0].get(column, "") == "":  # a column of the other task (multi-label), or empty
                continue
            scalars = events.Scalars(tag)
            assert [e.step for e in scalars] == [1, 2, 3, 4]  # each epoch once, none lost, none repeated
            assert [e.value for e in scalars] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)
        results = json.loads((run / "results.json").read_text())
        assert events.Scalars("test/accuracy")[-1].value == pytest.approx(results["test_acc"], rel=1e-6)
        assert {"curves", "confusion_matrix"} <= set(events.Tags()["images"])
        # the hyperparameters land beside the final figures
        hparams = EventAccumulator(str(run / "tensorboard"))
        hparams.Reload()
        assert "hparam/test_accuracy" in hparams.Tags()["scalars"]


def test_mlflow_reads_back_the_same_metrics_after_a_resume(npz_data, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    folder = interrupted_then_resumed(npz_data, tmp_path, "mlflow")
    uri = f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("basenet")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2  # one MLflow run per seed; the resume continued them, it made no new ones
    for seed in (1, 2):
        run = folder / f"seed-{seed}"
        record = json.loads((run / "mlflow.json").read_text())
        assert record["tracking_uri"] == uri
        rows = metrics_rows(run)
        for column, tag in SCALARS.items():
            if rows[0].get(column, "") == "":  # a column of the other task (multi-label), or empty
                continue
            history = sorted(client.get_metric_history(record["run_id"], tag), key=lambda m: m.step)
            assert [m.step for m in history] == [1, 2, 3, 4]
            assert [m.value for m in history] == pytest.approx([float(r[column]) for r in rows])
        mlflow_run = client.get_run(record["run_id"])
        assert mlflow_run.info.status == "FINISHED"
        assert mlflow_run.data.params["train.epochs"] == "4"
        results = json.loads((run / "results.json").read_text())
        assert mlflow_run.data.metrics["test/accuracy"] == pytest.approx(results["test_acc"])
        artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
        assert {"curves.png", "confusion_matrix.png", "results.json", "metrics.csv"} <= artifacts


def test_mlflow_logs_every_seed_trained_together(npz_data, tmp_path):
    """Worker processes share one SQLite store: its tables and the experiment are made once, first."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 2, "seeds": [1, 2, 3],
                                                "device": "cpu", "out": str(tmp_path / "runs"), "train.threads": 1,
                                                "log.trackers": ["mlflow"], "seeds_together": "on"})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    client = MlflowClient(f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}")
    runs = client.search_runs([client.get_experiment_by_name("basenet").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["1", "2", "3"]
    for seed in (1, 2, 3):
        record = json.loads((folder / f"seed-{seed}" / "mlflow.json").read_text())
        history = client.get_metric_history(record["run_id"], SCALARS["val_acc"])
        rows = metrics_rows(folder / f"seed-{seed}")
        # Steps compare exactly, values within float rounding: pytest.approx takes flat sequences only
        # (pytest >= 9.2 refuses nested ones, which earlier versions compared silently).
        logged = sorted((m.step, m.value) for m in history)
        assert [step for step, _ in logged] == [int(r["epoch"]) for r in rows]
        assert [value for _, value in logged] == pytest.approx([float(r["val_acc"]) for r in rows])
        assert client.get_run(record["run_id"]).info.status == "FINISHED"


def test_a_missing_tracker_package_is_named_before_any_folder(npz_data, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "out": str(tmp_path / "runs"),
                                                "log.trackers": ["mlflow"]})
    with pytest.raises(ConfigError, match=r'--log mlflow: the mlflow package is not installed; pip install "cnnlab\[mlflow\]"'):
        run_experiment(cfg, progress=False, log=lambda s: None)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match=r"log.trackers\[0\]': expected one of tensorboard, mlflow; got 'wandb'"):
        load_experiment("basenet", overrides={"log.trackers": ["wandb"]})
