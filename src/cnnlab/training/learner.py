"""One training run (one seed) as a `Learner` built from parts: phases outside, epochs inside.

    Learner(cfg, splits, seed=..., runtime=Runtime.resolve(cfg), model=None | a Classifier,
            callbacks=[KeepBest(...), RunFolderWriter(...), Progress(), EarlyStopping(...), yours...])

    for each phase of the fine-tuning policy (one phase for plain training):
        freeze / unfreeze, rebuild the optimizer and schedule (Keras's "recompile"),
        choose the data (images, or cached backbone features for a head-only phase)
        for each epoch of the phase:
            train one epoch (the callbacks see each batch and each optimizer step),
            evaluate on the validation split; the callbacks keep, checkpoint, log, stop

Everything around the loop is a callback (training/callbacks.py); where and how it computes is a
`Runtime` resolved once (training/runtime.py). `train_seed` is `cnnlab run`'s use of it: one seed
into a `RunFolder`. `run()` fits, loads the kept weights, tests and hands the results to the
callbacks; `fit()` alone trains (a tune trial, the LR range test).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.failpoints import failpoint
from cnnlab.config import ExperimentConfig, PhaseConfig, model_spec
from cnnlab.data.batches import epoch_generator, num_batches
from cnnlab.data.images import DataSplits, ImageSource
from cnnlab.data.leaks import leaked_test_images
from cnnlab.data.preprocess import BatchPreprocessor
from cnnlab.errors import CheckpointError, CnnlabError, RunInterrupted, TrainingDiverged
from cnnlab.models import Classifier, create_model, initialise, model_preprocessing, model_summary
from cnnlab.training import distributed
from cnnlab.training.checkpoint import PhaseParts, load_state_strict
from cnnlab.training.checks import check_data_rules, check_model_rules, on_cached_features
from cnnlab.training.callbacks import (Callback, Callbacks, CancelFit, CancelPhase, EarlyStopping, KeepBest, Progress,
                                      RunFolderWriter, Trackers)
from cnnlab.training.device import resolve_device, rng_state, set_rng_state
from cnnlab.training.ema import WeightAverage
from cnnlab.training.features import cached_features, feature_preprocess
from cnnlab.reporting.interpretation import confusion
from cnnlab.training.imbalance import epoch_order
from cnnlab.training.loop import evaluate, predict_logits, train_one_epoch
from cnnlab.training.scores import scores
from cnnlab.training.mixing import BatchMixer
from cnnlab.training.phases import apply_phase, freeze_for_phase, phase_epochs, resolve_phases, set_train_mode
from cnnlab.training.run_folder import RunFolder
from cnnlab.training.runtime import Runtime
from cnnlab.training.steps import OptimizerStep
from cnnlab.training.task import MultiLabel, fit_multilabel_thresholds, multilabel_split_figures, task_for
from cnnlab.training.trackers import make_trackers
from cnnlab.trust import Trust, fit_trust, trust_figures

Log = Callable[[str], None]


def silent(line: str) -> None:
    """The log of processes other than 0 under torchrun."""


def build_model(cfg: ExperimentConfig, num_classes: int, input_size: tuple[int, int, int], *,
                shape_only: bool = False) -> Classifier:
    """Create the registered model for this data and apply the configured initialiser (model_args were checked
    as the configuration was read: config.ModelSpec; `shape_only`: the architecture without its weights)."""
    args = model_spec(cfg).shape_only() if shape_only else cfg.model_args
    model = create_model(cfg.model, num_classes=num_classes, in_channels=input_size[0],
                         image_size=input_size[1], **args)
    return initialise(model, cfg.init)


def fit_preprocess(cfg: ExperimentConfig, splits: DataSplits) -> BatchPreprocessor:
    """The batch preprocessing of `cfg` fitted on the training split (featurewise statistics), on the
    model's weights' own normalisation where `preprocess.normalize: weights`."""
    return BatchPreprocessor.fit(cfg.preprocess, splits.train, model_preprocessing(cfg.model, cfg.model_args))


@dataclass
class TestOutputs:
    """The test split's logits and labels, its images (to draw the worst ones) and, for a calibrated run,
    the curves of the report's trust figures (trust.fitted.trust_figures)."""

    logits: torch.Tensor
    labels: torch.Tensor  # int64 classes, or (multi-label) float32 0/1 targets
    images: ImageSource
    trust: dict | None = None
    thresholds: np.ndarray | None = None  # multi-label: each class's threshold, chosen on validation


@dataclass
class PhaseData:
    """What one phase trains on and with: images or cached features, and the module that learns."""

    train: ImageSource
    val: ImageSource | None
    test: ImageSource
    preprocess: Callable[..., torch.Tensor]
    module: nn.Module  # the whole model, or only its head on cached features
    channels_last: bool

    @property
    def on_features(self) -> bool:
        return self.preprocess is feature_preprocess


def standard_callbacks(cfg: ExperimentConfig, *, progress: bool) -> list[Callback]:
    """The callbacks every run of `cfg` has: keep-best and early stopping as configured, progress."""
    tc = cfg.train
    out: list[Callback] = [Progress(bar=progress)]
    if tc.keep_best != "off":
        out.append(KeepBest(tc.keep_best))
    if tc.early_stopping.monitor != "off":
        out.append(EarlyStopping(tc.early_stopping))
    return out


class _BatchHooks:
    """The loop's view of the callbacks (loop.BatchHooks)."""

    def __init__(self, learner: "Learner"):
        self.learner, self.callbacks = learner, learner.callbacks

    def batch_start(self, index: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.callbacks.on_batch_start(self.learner, index, images, labels)

    def batch_end(self, index: int, loss: torch.Tensor, size: int) -> None:
        self.callbacks.on_batch_end(self.learner, index, loss, size)


class Learner:
    """A model, its data and preprocessing, a runtime and callbacks; the training state a checkpoint holds.

    Parts: `cfg` (the recipe: optimizer, phases, loss, augmentation), `splits` (train, validation and
    test: a split may be None — a tune trial or the LR range test never receives the test split),
    `runtime` (default: resolved from `cfg`), `model` (default: the registered `cfg.model`, built and
    initialised after seeding, so equal seeds give equal runs), `callbacks` (default: keep-best, early
    stopping and progress as `cfg` says; yours are added to them).
    """

    def __init__(self, cfg: ExperimentConfig, splits: DataSplits, *, seed: int, runtime: Runtime | None = None,
                 model: Classifier | None = None, callbacks: list[Callback] | tuple = (), log: Log = print,
                 progress: bool = True, standard: bool = True):
        self.cfg, self.splits, self.seed, self.log, self.progress = cfg, splits, seed, log, progress
        self.ctx = distributed.current()
        tc = cfg.train
        self.task = task_for(cfg, splits)  # one class an image or several: the loss, the figures (task.py)
        check_data_rules(cfg, splits, self.ctx.world)
        if runtime is None:
            runtime = Runtime.resolve(cfg, device=distributed.device_for(self.ctx, resolve_device(cfg.device)))
        self.runtime = runtime
        self.device = runtime.device
        runtime.seed(seed)
        self.model = build_model(cfg, splits.num_classes, splits.input_size) if model is None else model
        runtime.take_cores()  # seeds trained together share the cores out (train.threads)
        self.channels_last = runtime.channels_last
        self.model.to(self.device, memory_format=runtime.memory_format)
        # train.ema: the averaged copy is what is evaluated, kept and saved (training/ema.py).
        self.ema = WeightAverage(self.model, tc.ema) if tc.ema > 0 else None
        self.preprocess = fit_preprocess(cfg, splits)
        self.augment = self.preprocess.augment
        self.phases = resolve_phases(tc)
        self.phase_spans = phase_epochs(self.phases)
        self.epochs = sum(p.epochs for p in self.phases)
        self.amp = runtime.precision  # what autocasts: bf16, fp16 or fp32
        self.engine = runtime.engine  # what extracts cached features
        self.scaler = runtime.grad_scaler()  # fp16's loss scaler; None otherwise
        self.steps_per_epoch = num_batches(len(splits.train), tc.batch_size)
        # the task's loss: train.loss, train.class_weights (training/imbalance.py, multilabel/losses.py), smoothing
        self.train_loss = self.task.train_loss(cfg, splits, self.device)
        self.mixer = BatchMixer(tc.mixup, tc.cutmix, tc.mix_prob)
        check_model_rules(cfg, self.model)
        self.eval_loss = self.task.eval_loss()
        self.images = tuple(s.to(self.device) if s is not None else None
                            for s in (splits.train, splits.val, splits.test))
        self.callbacks = Callbacks([*(standard_callbacks(cfg, progress=progress) if standard else []), *callbacks])
        self.features: tuple | None = None  # computed by the first phase that trains on them
        self.history: list[dict] = []
        self.best: dict | None = None  # {"epoch", "value", "model"}: the weights train.keep_best keeps
        self.stopped: list[str] = []  # phases that early stopping ended
        self.resumed: dict | None = None  # the checkpoint being resumed, until its phase has restarted
        self.was_resumed = False
        self.diverged: dict | None = None  # {"epoch", "step"} once the loss stopped being finite
        self.validate = True  # the LR range test turns it off: it never reads a validation figure
        self.phase_index = 0
        self.parts = PhaseParts()  # what of the model each checkpoint of this phase holds (checkpoint.py)
        self.optimizer = self.scheduler = None
        self.step: OptimizerStep | None = None
        self.used_features = False
        self.one_off_s = 0.0  # feature extraction and other work outside the epochs
        self.trust: Trust | None = None  # fitted on the validation split after training (calibrate())
        self.thresholds: np.ndarray | None = None  # multi-label: fitted on the validation split (calibrate())
        self.val_trust_figures: dict = {}

    # ------------------------------------------------------------------ state

    @property
    def eval_model(self) -> Classifier:
        """The model validation, test and the saved weights use: the weight average, if any."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def epochs_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    def summary(self) -> str:
        freeze_for_phase(self.model, self.phases[0])  # the summary counts what the first phase trains
        return model_summary(self.model, self.splits.input_size, device=self.device).render(self.cfg.model)

    def checkpoint(self) -> dict:
        """What resumes the run exactly. In a phase with frozen parameters, only what can change
        (checkpoint.PhaseParts); the whole model goes with the phase's first checkpoint."""
        state = {"model_name": self.cfg.model, "seed": self.seed, "epoch": self.epochs_done,
                 "phase": self.phase_index, **self.parts.model_entries(self.model.state_dict()),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state(), "history": self.history}
        if self.best is not None:
            state["best"] = self.best
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.scaler is not None:  # fp16: the loss scale reached, so a resume scales as the run would have
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def restore(self, state: dict, source: Path) -> None:
        load_state_strict(self.model, state["model"], source=source, model_name=self.cfg.model)
        set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.best = state.get("best")
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(f"{source}: the experiment averages the weights (train.ema) but the "
                                      "checkpoint holds no average; it was written by a run without train.ema")
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.resumed, self.was_resumed = state, True

    # ------------------------------------------------------------------ training

    def fit(self, *, only_phase: int | None = None) -> None:
        """Train every epoch not done yet, phase by phase, calling the callbacks at each moment
        (`only_phase`: that phase alone, from the model as it is: the LR range test's)."""
        callbacks = self.callbacks
        callbacks.on_fit_start(self)
        try:
            for index, (phase, epochs) in enumerate(zip(self.phases, self.phase_spans)):
                remaining = [e for e in epochs if e > self.epochs_done]
                if only_phase is not None:
                    remaining = list(epochs) if index == only_phase else []
                if not remaining:
                    continue
                try:
                    callbacks.on_phase_start(self, index, phase)
                except CancelPhase:  # early stopping had ended it before a resume
                    continue
                data, train_model = self.start_phase(index)
                try:
                    for epoch in remaining:
                        callbacks.on_epoch_start(self, epoch)
                        self.history.append(self._train_epoch(epoch, phase, data, train_model))
                        failpoint(f"seed {self.seed} epoch {epoch} end")
                        callbacks.on_epoch_end(self, self.history[-1])
                except CancelPhase:
                    pass
                callbacks.on_phase_end(self, index, phase)
        except CancelFit:
            pass
        callbacks.on_fit_end(self)

    def run(self) -> dict | None:
        """fit(), then the kept weights tested; the callbacks get the results (and write them, in a run
        folder). Returns results.json's figures, or None when the learner holds no test split.
        On the way out of a failure each callback's `on_fail` hears why."""
        start = time.perf_counter()
        try:
            self.fit()
            kept_epoch = self.use_kept_weights()
            if self.splits.test is None:
                return None
            self.trust = self.calibrate()
            test, outputs = self.test()
        except KeyboardInterrupt:
            self.callbacks.on_fail(self, "interrupted", "")
            raise
        except TrainingDiverged as exc:
            self.diverged = {"epoch": exc.epoch, "step": exc.step}
            self.callbacks.on_fail(self, "diverged", str(exc))
            raise
        except CnnlabError as exc:
            self.callbacks.on_fail(self, "failed", str(exc))
            raise
        wall = sum(r["epoch_time_s"] for r in self.history) if self.was_resumed else time.perf_counter() - start
        results = self.results(test, wall_time_s=wall, kept_epoch=kept_epoch)
        if kept_epoch != self.epochs_done:
            self.log(f"kept the weights of epoch {kept_epoch} (best {self.cfg.train.keep_best})")
        try:  # results.json marks a finished run: a Ctrl-C while the last files are written takes it back
            self.callbacks.on_test_end(self, results, outputs)
        except KeyboardInterrupt:
            self.callbacks.on_fail(self, "interrupted", "while writing the results")
            raise
        return results

    def use_kept_weights(self) -> int:
        """Load the kept epoch's weights (train.keep_best) and return that epoch; the last one otherwise."""
        if self.best is None:
            return self.epochs_done
        self.eval_model.load_state_dict(self.best["model"])
        return int(self.best["epoch"])

    def start_phase(self, index: int) -> tuple[PhaseData, nn.Module]:
        """Freeze/unfreeze for phase `index`, build its optimizer and schedule, and choose its data; returns
        the data and the module that trains (DDP-wrapped, compiled as asked). fit() calls it; a benchmark
        that times the parts of an epoch calls it too."""
        phase, epochs = self.phases[index], self.phase_spans[index]
        failpoint(f"seed {self.seed} phase {index} start")
        self.phase_index = index
        tc = self.cfg.train
        self.optimizer, self.scheduler, parts = apply_phase(self.model, phase, tc.optimizer, tc,
                                                            self.steps_per_epoch)
        self.step = OptimizerStep(self.optimizer, self.scheduler, accumulate=tc.accumulate, grad_clip=tc.grad_clip,
                                  before_step=[lambda: self.callbacks.before_step(self)],
                                  after_step=[*([self.ema.update] if self.ema is not None else []),
                                              lambda: self.callbacks.after_step(self)],
                                  scaler=self.scaler)
        self.parts.start(index, self.model, self.resumed)
        if self.ema is not None:
            self.ema.track(self.model)
        if self.resumed is not None and self.resumed.get("phase") == index:  # resumed inside this phase
            self.optimizer.load_state_dict(self.resumed["optimizer"])
            self.scheduler.load_state_dict(self.resumed["scheduler"])
        self.resumed = None
        data = self.phase_data(phase)
        self.used_features |= data.on_features
        # DDP is rebuilt for each phase: it registers the parameters that train now.
        train_model = distributed.wrap(data.module, self.ctx, self.device)
        if self.runtime.compile:
            train_model = torch.compile(train_model)
        if len(self.phases) > 1:
            self.log(f"phase '{phase.name}' (epochs {epochs.start}-{epochs.stop - 1}): training {', '.join(parts)}"
                     + (" on cached backbone features" if data.on_features else ""))
        return data, train_model

    def phase_data(self, phase: PhaseConfig) -> PhaseData:
        if on_cached_features(self.cfg, self.model, phase):
            # The backbone is a fixed function in this phase: train the head on its cached features.
            if self.features is None:
                self.features = self._cached_feature_sets()
            train, val, test = self.features
            return PhaseData(train, val, test, feature_preprocess, self.model.head, channels_last=False)
        self.preprocess.augment = self.augment and phase.augment
        train, val, test = self.images
        return PhaseData(train, val, test, self.preprocess, self.model, self.channels_last)

    def _cached_feature_sets(self) -> tuple:
        """Each split's backbone features, from the on-disk cache or computed once into it."""
        tick = time.perf_counter()
        out, hits = [], []
        for split in self.images:
            if split is None:
                out.append(None)
                continue
            features, hit = cached_features(self.model, split, self.preprocess,
                                            cache_dir=self.cfg.train.feature_cache_dir,
                                            batch_size=self.cfg.train.eval_batch_size, device=self.device,
                                            amp=self.amp, channels_last=self.channels_last, log=self.log,
                                            progress=self.progress, engine=self.engine)
            out.append(features.to(self.device))
            hits.append(hit)
        elapsed = time.perf_counter() - tick
        self.one_off_s += elapsed
        computed = f"computed and cached ({self.engine})"
        if any(hits) and not all(hits):  # another run computed some of them meanwhile (a shared cache)
            computed += f" for {hits.count(False)} of {len(hits)} splits, the others reused"
        self.log(f"features: {'reused from the cache' if all(hits) else computed} in {elapsed:.1f}s")
        return tuple(out)

    def _train_epoch(self, epoch: int, phase: PhaseConfig, data: PhaseData, train_model: nn.Module) -> dict:
        tc, shard = self.cfg.train, (self.ctx.rank, self.ctx.world)
        tick = time.perf_counter()
        generator = epoch_generator(self.seed, epoch)
        # data.sampler draws the epoch's images first, from the epoch's generator: a resume draws the same
        order = epoch_order(data.train.labels, self.cfg.data.sampler, self.splits.num_classes, generator)
        train = train_one_epoch(
            train_model, data.train, preprocess=data.preprocess, step=self.step,
            loss_fn=self.train_loss, batch_size=tc.batch_size, generator=generator,
            epoch=epoch, amp=self.amp, channels_last=data.channels_last,
            train_mode=lambda m: set_train_mode(m, phase), shard=shard, mixer=self.mixer, order=order,
            hooks=_BatchHooks(self), correct_fn=self.task.correct)
        validates = data.val is not None and self.validate
        val = self._evaluate(data, data.val) if validates else dict.fromkeys(("loss", *self.task.scores))
        return {"epoch": epoch, "phase": phase.name, "train_loss": train["loss"], "train_acc": train["acc"],
                "val_loss": val["loss"], **{f"val_{name}": val[name] for name in self.task.scores},
                "lr": self.optimizer.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - tick}

    def eval_module(self, data: PhaseData) -> nn.Module:
        """`data.module` as evaluated: the average's head on cached features, else the whole average."""
        if self.ema is None:
            return data.module
        return self.ema.module.head if data.on_features else self.ema.module

    def _logits(self, data: PhaseData, split: ImageSource) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image's float32 logits and label of `split`, in its order, as the phase's data sees it."""
        return predict_logits(self.eval_module(data), split, preprocess=data.preprocess,
                              batch_size=self.cfg.train.eval_batch_size, amp=self.amp,
                              channels_last=data.channels_last, tta=self.tta_for(data))

    def _evaluate(self, data: PhaseData, split: ImageSource) -> dict:
        if isinstance(self.task, MultiLabel):  # every process predicts the split (mAP needs all of it at once)
            return multilabel_split_figures(*self._logits(data, split), self.eval_loss)
        return evaluate(self.eval_module(data), split, preprocess=data.preprocess, loss_fn=self.eval_loss,
                        batch_size=self.cfg.train.eval_batch_size, num_classes=self.splits.num_classes, amp=self.amp,
                        channels_last=data.channels_last, shard=(self.ctx.rank, self.ctx.world), tta=self.tta_for(data))

    def calibrate(self) -> Trust | None:
        """The step after fit: the temperature, conformal scores and rejection scores of the kept weights,
        fitted on the validation split's logits (trust/fitted.py); the test split is not read. None without
        a validation split."""
        data = self.phase_data(self.phases[-1])
        multilabel = isinstance(self.task, MultiLabel)
        if data.val is None or len(data.val) == 0:
            self.log("no validation split: every class keeps the threshold 0.5 (give data.val_fraction > 0)"
                     if multilabel else "no validation split: the probabilities stay uncalibrated, and predict "
                     "offers no conformal sets or 'unknown' (give data.val_fraction > 0)")
            if multilabel:
                self.thresholds = np.full(self.splits.num_classes, 0.5)
            return None
        tc = self.cfg.train
        logits, labels = self._logits(data, data.val)
        if multilabel:  # each class's threshold (train.thresholds); sets and 'unknown' are single-label's
            self.thresholds = fit_multilabel_thresholds(logits, labels, tc.thresholds)
            return None
        trust = fit_trust(logits, labels, calibration_mode=tc.calibration, fraction=self.cfg.data.calibration_fraction,
                          seed=self.cfg.data.split_seed, conformal_score=tc.conformal_score,
                          raps_lambda=tc.raps_lambda, raps_k=tc.raps_k, reject_score=tc.reject_score)
        fields, _ = trust_figures(trust, logits, labels, prefix="val")
        # the validation split fitted the temperature: its calibration figures, not its (in-sample) coverage
        self.val_trust_figures = {k: v for k, v in fields.items()
                                  if k.startswith("val_") and any(m in k for m in ("nll", "brier", "ece"))}
        return trust

    def tta_for(self, data: PhaseData) -> str:
        """train.tta's views of each image; a head on cached features has no image to mirror or move."""
        return "off" if data.on_features else self.cfg.train.tta

    def test(self) -> tuple[dict, TestOutputs | None]:
        """Loss and accuracy on the test split, as the last phase sees its data, and (one process)
        every test image's logits for the interpretation files."""
        data = self.phase_data(self.phases[-1])
        if isinstance(self.task, MultiLabel):  # every process predicts the split (mAP needs all of it at once)
            outputs = self._test_outputs(data)
            outputs.thresholds = self.thresholds
            figures = multilabel_split_figures(outputs.logits, outputs.labels, self.eval_loss,
                                               self.thresholds if self.thresholds is not None else 0.5)
            return figures, (outputs if self.ctx.is_main else None)
        if self.ctx.enabled:  # sharded over the processes; process 0 then computes the outputs alone
            metrics = self._evaluate(data, data.test)
            outputs = self._test_outputs(data) if self.ctx.is_main else None
        else:
            outputs = self._test_outputs(data)
            loss = F.cross_entropy(outputs.logits, outputs.labels, reduction="sum").item() / max(1, len(outputs.labels))
            matrix = confusion(outputs.labels.numpy(), outputs.logits.argmax(1).numpy(), self.splits.num_classes)
            metrics = {"loss": loss, **scores(matrix)}
        if outputs is not None and self.trust is not None:  # measured with what validation fitted
            metrics["trust"], outputs.trust = trust_figures(self.trust, outputs.logits, outputs.labels)
        return metrics, outputs

    def _test_outputs(self, data: PhaseData) -> "TestOutputs":
        logits, labels = self._logits(data, data.test)
        return TestOutputs(logits, labels, self.images[2])

    def inference_record(self) -> dict:
        """Everything needed to use the trained weights on new images (stored with model.safetensors)."""
        from cnnlab.version import __version__

        channels, height, width = self.splits.input_size
        return {"model": self.cfg.model, "model_args": self.cfg.model_args, "init": self.cfg.init,
                "class_names": self.splits.class_names, "input_size": [channels, height, width],
                "resize": self.splits.resize, "crop_ratio": self.splits.crop_ratio,
                "interpolation": self.splits.interpolation,
                **self.preprocess.state(), "tta": self.cfg.train.tta, "experiment": self.cfg.experiment_name,
                "seed": self.seed, "trust": self.trust.to_record() if self.trust is not None else None,
                **({"task": "multilabel", "thresholds": [float(t) for t in self.thresholds]}
                   if self.thresholds is not None else {}),
                "cnnlab": __version__}

    def results(self, test: dict, wall_time_s: float, kept_epoch: int) -> dict:
        history, splits, scores = self.history, self.splits, self.task.scores
        epoch_times = [r["epoch_time_s"] for r in history]
        best = f"val_{self.task.primary}"
        return {
            "experiment": self.cfg.experiment_name, "model": self.cfg.model, "seed": self.seed,
            "epochs": self.epochs, "epochs_trained": len(history), "kept_epoch": kept_epoch,
            "keep_best": self.cfg.train.keep_best, "stopped_early": self.stopped,
            "test_loss": test["loss"], **{f"test_{name}": test[name] for name in scores},
            "final_val_loss": history[-1]["val_loss"],
            **{f"final_val_{name}": history[-1].get(f"val_{name}") for name in scores},
            f"best_{best}": max((r[best] for r in history if r[best] is not None), default=None),
            # multi-label: the classes mAP averages over, the labels an image has, how thresholds were chosen
            **({"task": "multilabel", "test_map_classes": test["map_classes"],
                "test_label_cardinality": test["label_cardinality"], "thresholds": self.cfg.train.thresholds,
                # images with no label at all (legitimate: a negative for every class), per split
                "unlabelled_images": {name: int(((split.labels > 0.5).sum(1) == 0).sum())
                                      for name, split in (("train", splits.train), ("val", splits.val),
                                                          ("test", splits.test)) if split is not None}}
               if isinstance(self.task, MultiLabel) else {}),
            "class_weights": self.cfg.train.class_weights, "sampler": self.cfg.data.sampler,
            "mean_epoch_time_s": float(np.mean(epoch_times)), "median_epoch_time_s": float(np.median(epoch_times)),
            # each phase's own median: a head on cached features takes milliseconds, a fine-tune minutes
            "phase_median_epoch_time_s": {name: float(np.median([r["epoch_time_s"] for r in history
                                                                  if r["phase"] == name]))
                                          for name in dict.fromkeys(r["phase"] for r in history)},
            "one_off_time_s": self.one_off_s, "wall_time_s": wall_time_s,
            "device": str(self.device), "precision": self.amp, "num_train": len(splits.train),
            "num_val": len(splits.val) if splits.val is not None else 0, "num_test": len(splits.test),
            "preprocess": self.preprocess.state(), "feature_cache": self.used_features,
            "engine": self.engine if self.used_features else "torch",
            "processes": self.ctx.world, "global_batch_size": self.cfg.train.batch_size,
            # data.leak_check: test images with a near-exact duplicate in train/val (None: not checked)
            "leaked_test_images": leaked_test_images(splits.leaks) if splits.leaks is not None else None,
            # calibration, conformal sets and 'unknown' (trust/): fitted on validation, measured on test
            **self.val_trust_figures, **test.get("trust", {}),
        }


def train_seed(cfg: ExperimentConfig, run_dir: Path, splits: DataSplits, *, seed: int, resume: bool = False,
               progress: bool = True, log: Log = print, callbacks: list[Callback] | tuple = ()) -> dict:
    """Train one seed of `cfg` in `run_dir` (resuming from its checkpoint if asked); return its results.
    `callbacks` join the standard ones and the run folder's writer."""
    ctx = distributed.current()
    folder = RunFolder(run_dir, writes=ctx.is_main)
    trackers = Trackers(make_trackers(cfg, run_dir, seed) if ctx.is_main else [], run_dir)  # one process reports
    if not ctx.is_main:  # one process writes and prints; the others only train
        log, progress = silent, False
    with folder.held():
        try:
            learner = Learner(cfg, splits, seed=seed, log=log, progress=progress,
                              callbacks=[RunFolderWriter(folder, resumed=resume), trackers, *callbacks])
            if resume:
                learner.restore(folder.read_checkpoint(cfg.model), folder.checkpoint_path)
                log(f"resuming {folder.path} at epoch {learner.epochs_done + 1}/{learner.epochs}")
        except KeyboardInterrupt:
            folder.status_on_the_way_out("interrupted", epoch=0)
            raise RunInterrupted(folder.path, 0) from None
        except CnnlabError as exc:  # before the learner runs: its callbacks have heard nothing yet
            folder.status_on_the_way_out("failed", message=str(exc))
            trackers.stop("failed")
            raise
        try:
            results = learner.run()  # the run folder's writer records every state on the way out
        except KeyboardInterrupt:
            raise RunInterrupted(folder.path, learner.epochs_done) from None
    lead = ("mAP", "test_map") if "test_map" in results else ("accuracy", "test_acc")
    log(f"seed {seed}: test loss {results['test_loss']:.4f}, test {lead[0]} {100 * results[lead[1]]:.2f}%  "
        f"→ {folder.path}")
    return results
