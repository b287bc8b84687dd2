"""Experiment trackers people already use, fed from the same rows as metrics.csv.

    --log tensorboard   seed-<s>/tensorboard/   scalars per epoch, hyperparameters, figures
    --log mlflow        params, per-epoch metrics, figures and results to an MLflow store
                        (default: sqlite:///<out>/mlflow.db, a local file; any URI by --mlflow-uri)

Both are optional extras (`pip install "cnnlab[tensorboard]"`, `"cnnlab[mlflow]"`), imported
only when asked for. metrics.csv stays the record: a resumed run replays its rows into the
tracker, so the tracker's series ends up equal to the file, each epoch once:
TensorBoard purges the steps after the checkpoint (`purge_step`); MLflow is told only the
epochs it has not recorded.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Protocol

import cnnlab.layout as layout
from cnnlab.config import ExperimentConfig, config_to_dict, flat_config
from cnnlab.errors import ConfigError
from cnnlab.fileio import atomic_write_json, read_json

# metrics.csv column → tracker tag
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
           "val_acc": "accuracy/val", "val_bal_acc": "balanced_accuracy/val", "val_macro_f1": "macro_f1/val",
           "lr": "lr", "epoch_time_s": "time/epoch_s",
           # a multi-label run's (at 0.5 each epoch)
           "val_map": "map/val", "val_micro_f1": "micro_f1/val", "val_exact_match": "exact_match/val",
           "val_hamming_loss": "hamming_loss/val"}
FIGURES = ("curves.png", "confusion_matrix.png", "top_losses.png", "pr_curves.png", "label_counts.png")


def headline(results: dict) -> tuple[str, float]:
    """The test figure a tracker shows first: accuracy, or a multi-label run's mAP."""
    return ("map", results["test_map"]) if "test_map" in results else ("accuracy", results["test_acc"])
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def check_trackers(trackers: list[str]) -> None:
    """Before any folder: each asked-for tracker's package is installed."""
    for name in trackers:
        module, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"--log {name}: the {module} package is not installed; "
                              f'pip install "cnnlab[{extra}]"')


def flat_params(cfg: ExperimentConfig) -> dict[str, str]:
    """The configuration as flat `section.key` strings (what trackers take as hyperparameters)."""
    return {key: str(value) for key, value in flat_config(cfg).items()}


class Tracker(Protocol):
    def start(self, history: list[dict]) -> None: ...
    def epoch(self, row: dict) -> None: ...
    def finish(self, results: dict, run_dir: Path) -> None: ...
    def stop(self, state: str) -> None: ...


def _rows_to_scalars(row: dict):
    for column, tag in SCALARS.items():
        if row.get(column) is not None:
            yield tag, float(row[column])


class TensorBoardTracker:
    def __init__(self, run_dir: Path, cfg: ExperimentConfig, seed: int):
        self.log_dir, self.cfg, self.seed, self.writer = run_dir / "tensorboard", cfg, seed, None

    def start(self, history: list[dict]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run starts a new event file that purges every earlier step, then replays
        # metrics.csv: events flushed after the checkpoint (or lost before a flush) cannot leave
        # duplicates or holes.
        resumed = bool(history) or self.log_dir.is_dir()
        self.writer = SummaryWriter(str(self.log_dir), purge_step=1 if resumed else None)
        if not resumed:
            import yaml

            self.writer.add_text("configuration", "```\n" + yaml.safe_dump(config_to_dict(self.cfg)) + "```")
        for row in history:
            self.epoch(row)

    def epoch(self, row: dict) -> None:
        for tag, value in _rows_to_scalars(row):
            self.writer.add_scalar(tag, value, row["epoch"])
        self.writer.flush()

    def finish(self, results: dict, run_dir: Path) -> None:
        import numpy as np
        from PIL import Image

        self.writer.add_scalar("test/loss", results["test_loss"], results["kept_epoch"])
        lead, value = headline(results)
        self.writer.add_scalar(f"test/{lead}", value, results["kept_epoch"])
        for name in FIGURES:
            if (run_dir / name).is_file():
                image = np.asarray(Image.open(run_dir / name).convert("RGB"))
                self.writer.add_image(name.removesuffix(".png"), image, results["kept_epoch"], dataformats="HWC")
        self.writer.add_hparams(
            {k: v for k, v in flat_params(self.cfg).items() if not k.startswith(("data.path", "out"))},
            {f"hparam/test_{lead}": value, "hparam/test_loss": results["test_loss"]}, run_name=".")
        self.stop("finished")

    def stop(self, state: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MlflowTracker:
    """One MLflow run per seed; `mlflow.json` in the seed folder names it, so a resume continues it."""

    def __init__(self, run_dir: Path, cfg: ExperimentConfig, seed: int):
        self.run_dir, self.cfg, self.seed = run_dir, cfg, seed
        self.record = run_dir / "mlflow.json"
        self.client, self.run_id = None, None

    def start(self, history: list[dict]) -> None:
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()
        if self.record.is_file():
            saved = read_json(self.record)
            self.client, self.run_id = MlflowClient(saved["tracking_uri"]), saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            uri = mlflow_uri(self.cfg)
            self.client = MlflowClient(uri)
            experiment_id = mlflow_experiment(self.client, self.cfg, uri)
            run = self.client.create_run(experiment_id, run_name=f"{self.run_dir.parent.name}/{self.run_dir.name}",
                                         tags={"cnnlab.run_dir": str(self.run_dir.resolve()), "seed": str(self.seed)})
            self.run_id = run.info.run_id
            atomic_write_json(self.record, {"tracking_uri": uri, "run_id": self.run_id})
            params = list(flat_params(self.cfg).items())
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(self.run_id, params=[_param(k, v) for k, v in params[i:i + 100]])
        logged = {m.step for m in self.client.get_metric_history(self.run_id, SCALARS["train_loss"])}
        for row in history:
            if row["epoch"] not in logged:
                self.epoch(row)

    def epoch(self, row: dict) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(tag, value, stamp, row["epoch"])
                                                    for tag, value in _rows_to_scalars(row)])

    def finish(self, results: dict, run_dir: Path) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric("test/loss", results["test_loss"], stamp, results["kept_epoch"]),
            Metric(f"test/{headline(results)[0]}", headline(results)[1], stamp, results["kept_epoch"])])
        for name in (*FIGURES, layout.RESULTS_FILE, "metrics.csv", "per_class.csv"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.stop("finished")

    def stop(self, state: str) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, status="FINISHED" if state == "finished" else "KILLED")
            self.client = None


def _quiet_mlflow() -> None:
    """MLflow's table migrations and notices are not the user's business."""
    import logging

    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def mlflow_uri(cfg: ExperimentConfig) -> str:
    """--mlflow-uri, else a SQLite file in the output folder."""
    if cfg.log.mlflow_uri:
        return cfg.log.mlflow_uri
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{out / 'mlflow.db'}"


def mlflow_experiment(client, cfg: ExperimentConfig, uri: str) -> str:
    """The id of the MLflow experiment named like cnnlab's, made if it does not exist yet."""
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(cfg.experiment_name,
                                    artifact_location=(Path(cfg.out).resolve() / "mlartifacts").as_uri()
                                    if uri.startswith("sqlite:") else None)


def prepare_shared_trackers(cfg: ExperimentConfig) -> None:
    """Make once what the seeds' trackers share, before seeds train together in worker processes:
    workers that each create an SQLite store's tables, or the same MLflow experiment, at once
    collide ('table runs already exists')."""
    if "mlflow" in cfg.log.trackers:
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()
        uri = mlflow_uri(cfg)
        mlflow_experiment(MlflowClient(uri), cfg, uri)


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value[:6000])  # MLflow's limit on a parameter's value


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


def make_trackers(cfg: ExperimentConfig, run_dir: Path, seed: int) -> list[Tracker]:
    return [TRACKER_CLASSES[name](run_dir, cfg, seed) for name in dict.fromkeys(cfg.log.trackers)]
