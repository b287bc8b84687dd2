"""cnnlab in Python: `cnnlab.Learner`, for a notebook (the lab this project reproduces was written in Colab).

    import cnnlab
    learn = cnnlab.Learner.from_experiment("birdnet_v4", data="~/birds", backbone="efficientnet_lite0", epochs=3)
    result = learn.fit()              # the files and figures of `cnnlab run`; returns them as an object
    result.test_acc, result.runs      # mean over seeds, one row per seed
    learn.predict(["a.jpg", pil_image, numpy_hwc_uint8])   # top-k per image, as `cnnlab predict` answers
    learn.export("bird.onnx"); learn.report()

    learn = cnnlab.Learner(MyNet(), data="~/photos", epochs=5)     # any nn.Module: its head found or named

A `Learner` here is an experiment: a configuration, its data, and one training Learner per seed
(training/learner.py) behind the same study code `cnnlab run` uses — the same run folders, the same
figures. Its options are `cnnlab run`'s (config.OPTION_KEYS): data, source, backbone, weights,
epochs, batch_size, seeds, device, out, folds, engine, plus `overrides` for any other key
(`{"train.optimizer.lr": 3e-4}`) and `callbacks` (training/callbacks.py), which see every hook.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cnnlab.layout as layout
from cnnlab.config import ExperimentConfig, load_experiment, option_overrides
from cnnlab.errors import ConfigError, RunError


@dataclass
class Result:
    """What a fit measured: the means over seeds (or folds) and one row per run (results.json's figures)."""

    folder: Path
    experiment: str
    test_acc: float | None  # None for a multi-label experiment (its headline is test_map)
    test_acc_std: float | None
    test_loss: float
    test_loss_std: float
    test_bal_acc: float | None
    test_macro_f1: float | None
    runs: list[dict] = field(repr=False)
    summary: dict = field(repr=False)
    task: str = "single"
    test_map: float | None = None  # multi-label: mean average precision over the classes, mean over the runs
    test_map_std: float | None = None

    @classmethod
    def read(cls, folder: Path) -> "Result":
        """The result of a finished experiment folder (its summary.json)."""
        from cnnlab.studies.layout import read_summary

        summary = read_summary(Path(folder) / layout.SUMMARY_FILE)
        return cls(Path(folder), summary["experiment"], summary.get("test_acc_mean"), summary.get("test_acc_std"),
                   summary["test_loss_mean"], summary["test_loss_std"], summary.get("test_bal_acc_mean"),
                   summary.get("test_macro_f1_mean"), summary["runs"], summary, summary.get("task", "single"),
                   summary.get("test_map_mean"), summary.get("test_map_std"))

    def __str__(self) -> str:
        if self.task == "multilabel":
            runs = ", ".join(f"{100 * r['test_map']:.2f} %" for r in self.runs)
            return (f"{self.experiment}: test mAP {100 * self.test_map:.2f} ± {100 * self.test_map_std:.2f} % over "
                    f"{len(self.runs)} run(s) ({runs}); test loss {self.test_loss:.4f}; {self.folder}")
        runs = ", ".join(f"{100 * r['test_acc']:.2f} %" for r in self.runs)
        return (f"{self.experiment}: test accuracy {100 * self.test_acc:.2f} ± {100 * self.test_acc_std:.2f} % over "
                f"{len(self.runs)} run(s) ({runs}); test loss {self.test_loss:.4f}; {self.folder}")


def _data_options(data) -> tuple[dict, Any]:
    """`data=` as options (a path or an hf: address) or as splits already loaded (DataSplits)."""
    from cnnlab.data.images import DataSplits

    if data is None:
        return {}, None
    if isinstance(data, DataSplits):
        return {}, data
    if isinstance(data, (str, Path)):
        text = str(data)
        return {"data": text if text.startswith("hf:") else str(Path(text).expanduser())}, None
    raise ConfigError(f"data=: expected a path, an hf:OWNER/NAME address or cnnlab.data.DataSplits, "
                      f"got {type(data).__name__}")


class Learner:
    """An experiment you can fit, predict with, export and report on from Python."""

    def __init__(self, model=None, data=None, *, experiment: str | Path | None = None, head: str | None = None,
                 source: str | None = None, backbone: str | None = None, weights: str | None = None,
                 epochs: int | None = None, batch_size: int | None = None, seeds: list[int] | None = None,
                 device: str | None = None, out: str | None = None, folds: int | None = None,
                 engine: str | None = None, overrides: dict[str, Any] | None = None, callbacks=(),
                 input_size: tuple[int, int, int] | None = None):
        """`model`: a registered name ("basenet") or any nn.Module (registered for you; `head` names its last
        layer if it is not the last nn.Linear; `input_size` (C, H, W) probes it, default the data's).
        `experiment`: a preset or experiment file whose recipe to start from (default: the model's preset,
        else plain defaults). The other options are `cnnlab run`'s."""
        data_options, self.splits = _data_options(data)
        options = {"source": source, "backbone": backbone, "weights": weights, "epochs": epochs,
                   "batch_size": batch_size, "seeds": list(seeds) if seeds is not None else None, "device": device,
                   "out": out, "folds": folds, "engine": engine, **data_options}
        # a notebook passes paths as Path objects: the configuration holds them as strings, ~ expanded
        options = {k: str(Path(v).expanduser()) if isinstance(v, os.PathLike) else v for k, v in options.items()}
        keys, origins = option_overrides(options, spell=lambda option: f"Learner({option}=...)")
        for key, value in (overrides or {}).items():
            keys[key], origins[key] = value, f"overrides[{key!r}]"
        if model is not None and not isinstance(model, str):
            keys["model"], origins["model"] = self._register(model, head, input_size), "Learner(model=...)"
            keys.setdefault("init", "torch")  # the module's own initialisers: it is drawn again per seed
            # its outputs are its classes (CIFAR-100 keeps that many; other data must have them: checked at fit)
            keys.setdefault("data.num_classes", self._outputs)
            keys.setdefault("seeds_together", "off")  # the module lives in this process, not in seed workers
        elif isinstance(model, str):
            keys["model"], origins["model"] = model, "Learner(model=...)"
        source_file = experiment
        if source_file is None and isinstance(model, str):
            from cnnlab.config import list_builtin_experiments

            source_file = model if model in list_builtin_experiments() else None
        self.cfg: ExperimentConfig = load_experiment(source_file, overrides=keys, origins=origins)
        self.callbacks = list(callbacks)
        self.folder: Path | None = None
        self.result: Result | None = None
        self._trained: dict = {}

    def _register(self, module, head: str | None, input_size) -> str:
        from torch import nn

        from cnnlab.models.wrap import register_module

        if not isinstance(module, nn.Module):
            raise ConfigError(f"model=: expected a registered model's name or a torch.nn.Module, "
                              f"got {type(module).__name__}")
        if input_size is None:
            input_size = self.splits.input_size if self.splits is not None else (3, 32, 32)
        from cnnlab.models import get_model_entry

        name = register_module(module, name=f"python.{type(module).__name__}", input_size=tuple(input_size),
                               head=head)
        self._outputs = get_model_entry(name).builder.outputs  # measured once, by the registration's probe
        return name

    @classmethod
    def from_experiment(cls, experiment: str | Path, *, data=None, **options) -> "Learner":
        """A built-in preset (`cnnlab list`) or an experiment file, with `cnnlab run`'s options on top."""
        return cls(None, data, experiment=experiment, **options)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Learner":
        """A finished experiment folder (`runs/<experiment>/<stamp>/`), to predict, export or report on."""
        folder = Path(folder).expanduser()
        if not (folder / layout.EXPERIMENT_FILE).is_file():
            raise RunError(f"{folder}: not an experiment folder (no experiment.yaml)")
        learner = cls.__new__(cls)
        learner.cfg, learner.splits, learner.callbacks = load_experiment(folder / layout.EXPERIMENT_FILE), None, []
        learner.folder, learner._trained = folder, {}
        learner.result = Result.read(folder) if (folder / layout.SUMMARY_FILE).is_file() else None
        return learner

    # ---------------------------------------------------------------- training

    def fit(self, *, progress: bool = True, log: Callable[[str], None] = print) -> Result:
        """Train every seed into a new experiment folder (as `cnnlab run`) and return the figures."""
        from cnnlab.studies.experiment import run_experiment

        self.folder = run_experiment(self.cfg, progress=progress, log=log, splits=self.splits,
                                     callbacks=self.callbacks)
        self._trained = {}
        self.result = Result.read(self.folder)
        return self.result

    def lr_find(self, *, phase: int = 0, steps: int = 100, log: Callable[[str], None] = print) -> dict:
        """The learning-rate range test on this experiment's own step (studies/lr_find.py); returns its figures."""
        from cnnlab.studies.lr_find import lr_find

        return lr_find(self.cfg, phase=phase, steps=steps, log=log, splits=self.splits)

    # ---------------------------------------------------------------- using the trained model

    def _require_folder(self) -> Path:
        if self.folder is None:
            raise RunError("nothing trained yet: call fit() first (or Learner.from_folder(FOLDER))")
        return self.folder

    def trained(self, seed: int | None = None, *, device: str = "cpu", engine: str = "torch"):
        """The trained model of `seed` (default: the first seed) as inference uses it (inference/trained.py)."""
        from cnnlab.inference.trained import load_trained

        folder = self._require_folder()
        seed = self.cfg.seeds[0] if seed is None else seed
        key = (seed, device, engine)
        if key not in self._trained:
            self._trained[key] = load_trained(folder, seed=seed, device=device, engine=engine)
        return self._trained[key]

    def probabilities(self, images, *, seed: int | None = None):
        """Class probabilities (N, classes) for paths, PIL images, numpy arrays or tensors (inference/inputs.py),
        resized and normalised as the weights expect, with the run's test-time augmentation."""
        return self.trained(seed).probabilities(images)

    def predict(self, images, *, top_k: int = 5, seed: int | None = None) -> list[list[tuple[str, float]]]:
        """Each image's top-k (class, probability), most likely first: what `cnnlab predict` answers."""
        return self.trained(seed).predict(images, top_k=top_k)

    def labels(self, images, *, seed: int | None = None) -> list[list[str]]:
        """A multi-label experiment's answer: each image's classes at or above the thresholds its run chose on the
        validation split, most likely first (the `labels` column of `cnnlab predict`)."""
        return self.trained(seed).labels(images)

    def prediction_sets(self, images, *, coverage: float = 0.9, seed: int | None = None) -> list[list[str]]:
        """Each image's conformal set: the classes that hold the true one with probability >= `coverage`
        (`cnnlab predict --coverage`), calibrated on the run's validation split."""
        return self.trained(seed).prediction_sets(images, coverage=coverage)

    def decisions(self, images, *, reject_rate: float = 0.05, seed: int | None = None) -> list[str]:
        """Each image's top class, or 'unknown' below the rule that refuses `reject_rate` of the validation
        images (`cnnlab predict --reject-rate`)."""
        return self.trained(seed).decisions(images, reject_rate=reject_rate)

    def export(self, path: str | Path, *, format: str = "onnx", seed: int | None = None, **options) -> Path:
        """The trained model as an ONNX graph or OpenVINO IR, checked against PyTorch (`cnnlab export`)."""
        from cnnlab.inference.export import export_model
        from cnnlab.inference.trained import load_trained

        trained = load_trained(self._require_folder(), seed=self.cfg.seeds[0] if seed is None else seed)
        export_model(trained, Path(path), fmt=format, **options)
        return Path(path)

    def report(self, path: str | Path | None = None) -> Path:
        """The experiment's report page (`cnnlab report`)."""
        from cnnlab.studies.report import write_report

        return write_report([self._require_folder()], out=path)
