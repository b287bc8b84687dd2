"""One training run (one seed): phases as the outer loop, epochs as the inner one.

    for each phase of the fine-tuning policy (one phase for plain training):
        freeze / unfreeze, rebuild the optimizer and schedule (Keras's "recompile"),
        choose the data (images, or cached backbone features for a head-only phase)
        for each epoch of the phase:
            train one epoch, evaluate on the validation split, checkpoint, log

`train_seed` runs it into a `RunFolder`; `Trainer` holds the state a checkpoint restores.
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
from cnnlab.config import ExperimentConfig, PhaseConfig
from cnnlab.data.batches import epoch_generator, num_batches
from cnnlab.data.images import DataSplits, ImageSource
from cnnlab.data.preprocess import BatchPreprocessor
from cnnlab.errors import CheckpointError, CnnlabError, ConfigError, RunInterrupted, TrainingDiverged
from cnnlab.models import Classifier, create_model, initialise, model_preprocessing, model_summary
from cnnlab.training import distributed
from cnnlab.training.allocator import keep_freed_memory
from cnnlab.training.checkpoint import PhaseParts, load_state_strict
from cnnlab.training.checks import check_data_rules, check_model_rules, on_cached_features
from cnnlab.training.device import cpu_threads, resolve_device, rng_state, seed_everything, set_rng_state
from cnnlab.training.ema import WeightAverage
from cnnlab.training.engines import resolve_engine
from cnnlab.training.features import cached_features, feature_preprocess
from cnnlab.reporting.interpretation import confusion
from cnnlab.training.imbalance import class_counts, class_weights, epoch_order
from cnnlab.training.loop import evaluate, predict_logits, resolve_amp, train_one_epoch
from cnnlab.training.scores import SCORES, scores
from cnnlab.training.mixing import BatchMixer
from cnnlab.training.phases import apply_phase, freeze_for_phase, phase_epochs, resolve_phases, set_train_mode
from cnnlab.training.run_folder import RunFolder
from cnnlab.training.steps import OptimizerStep
from cnnlab.training.trackers import make_trackers
from cnnlab.training.selection import improves, should_stop

Log = Callable[[str], None]


def silent(line: str) -> None:
    """The log of processes other than 0 under torchrun."""


def build_model(cfg: ExperimentConfig, num_classes: int, input_size: tuple[int, int, int]) -> Classifier:
    """Create the registered model for this data and apply the configured initialiser."""
    reserved = sorted({"num_classes", "in_channels", "image_size"} & set(cfg.model_args))
    if reserved:
        raise ConfigError(f"model_args.{reserved[0]}: set by the data (data.num_classes, the images' channels, "
                          "data.image_size), not by model_args")
    model = create_model(cfg.model, num_classes=num_classes, in_channels=input_size[0],
                         image_size=input_size[1], **cfg.model_args)
    return initialise(model, cfg.init)


@dataclass
class TestOutputs:
    """The test split's logits and labels, and its images (to draw the worst ones)."""

    logits: torch.Tensor
    labels: torch.Tensor
    images: ImageSource


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


class Trainer:
    """The model, its data and preprocessing, and the training state a checkpoint holds."""

    def __init__(self, cfg: ExperimentConfig, splits: DataSplits, *, seed: int, log: Log = print,
                 progress: bool = True):
        self.cfg, self.splits, self.seed, self.log, self.progress = cfg, splits, seed, log, progress
        self.ctx = distributed.current()
        tc = cfg.train
        check_data_rules(cfg, splits, self.ctx.world)
        self.device = distributed.device_for(self.ctx, resolve_device(cfg.device))
        seed_everything(seed)
        self.model = build_model(cfg, splits.num_classes, splits.input_size)
        if self.device.type == "cpu":  # seeds trained together share the cores out (train.threads)
            torch.set_num_threads(cpu_threads(tc.threads))
            keep_freed_memory()  # large activations reuse freed memory (training/allocator.py)
        self.channels_last = tc.channels_last and self.device.type in ("cuda", "cpu")
        self.model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        # train.ema: the averaged copy is what is evaluated, kept and saved (training/ema.py).
        self.ema = WeightAverage(self.model, tc.ema) if tc.ema > 0 else None
        self.preprocess = BatchPreprocessor.fit(cfg.preprocess, splits.train,
                                                model_preprocessing(cfg.model, cfg.model_args))
        self.augment = self.preprocess.augment
        self.phases = resolve_phases(tc)
        self.epochs = sum(p.epochs for p in self.phases)
        self.amp = resolve_amp(tc.amp, self.device)
        self.engine = resolve_engine(tc.engine, self.device)  # what extracts cached features
        self.steps_per_epoch = num_batches(len(splits.train), tc.batch_size)
        # train.class_weights: the loss weighs each class by its training images (training/imbalance.py)
        weights = class_weights(class_counts(splits.train.labels, splits.num_classes), tc.class_weights,
                                tc.class_weights_beta)
        self.train_loss = nn.CrossEntropyLoss(weight=weights.to(self.device) if weights is not None else None,
                                              label_smoothing=tc.label_smoothing)
        self.mixer = BatchMixer(tc.mixup, tc.cutmix, tc.mix_prob)
        check_model_rules(cfg, self.model)
        self.eval_loss = nn.CrossEntropyLoss()
        self.images = tuple(s.to(self.device) if s is not None else None
                            for s in (splits.train, splits.val, splits.test))
        self.features: tuple | None = None  # computed by the first phase that trains on them
        self.history: list[dict] = []
        self.best: dict | None = None  # {"epoch", "value", "model"}: the weights train.keep_best keeps
        self.stopped: list[str] = []  # phases that early stopping ended
        self.resumed: dict | None = None  # the checkpoint being resumed, until its phase has restarted
        self.phase_index = 0
        self.parts = PhaseParts()  # what of the model each checkpoint of this phase holds (checkpoint.py)
        self.optimizer = self.scheduler = None
        self.step: OptimizerStep | None = None
        self.used_features = False
        self.one_off_s = 0.0  # feature extraction and other work outside the epochs

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
        self.resumed = state

    # ------------------------------------------------------------------ training

    def fit(self, on_epoch_end: Callable[["Trainer"], None] = lambda trainer: None) -> None:
        """Train every epoch not done yet, phase by phase."""
        for index, (phase, epochs) in enumerate(zip(self.phases, phase_epochs(self.phases))):
            remaining = [e for e in epochs if e > self.epochs_done]
            if not remaining or self._stops(phase, epochs):
                continue
            data, train_model = self._start_phase(index, phase, epochs)
            for epoch in remaining:
                self.history.append(self._train_epoch(epoch, phase, data, train_model))
                failpoint(f"seed {self.seed} epoch {epoch} end")
                self._keep_if_best(self.history[-1])
                on_epoch_end(self)
                self.log(epoch_line(self.history[-1], self.epochs))
                if epoch != epochs[-1] and self._stops(phase, epochs):
                    stop = self.cfg.train.early_stopping
                    self.log(f"early stopping: {stop.monitor} has not improved by more than {stop.min_delta} for "
                             f"{stop.patience} epoch(s); phase '{phase.name}' ends at epoch {epoch}")
                    break

    def _stops(self, phase: PhaseConfig, epochs: range) -> bool:
        stops = should_stop([r for r in self.history if r["epoch"] in epochs], self.cfg.train.early_stopping)
        if stops and phase.name not in self.stopped:
            self.stopped.append(phase.name)
        return stops

    def _keep_if_best(self, row: dict) -> None:
        monitor = self.cfg.train.keep_best
        if monitor != "off" and improves(row[monitor], self.best["value"] if self.best else None, monitor):
            self.best = {"epoch": row["epoch"], "value": row[monitor],
                         "model": {k: v.detach().cpu().clone() for k, v in self.eval_model.state_dict().items()}}

    def use_kept_weights(self) -> int:
        """Load the kept epoch's weights (train.keep_best) and return that epoch; the last one otherwise."""
        if self.best is None:
            return self.epochs_done
        self.eval_model.load_state_dict(self.best["model"])
        return int(self.best["epoch"])

    def _start_phase(self, index: int, phase: PhaseConfig, epochs: range) -> tuple[PhaseData, nn.Module]:
        """Freeze/unfreeze for `phase`, build its optimizer and schedule, and choose its data."""
        failpoint(f"seed {self.seed} phase {index} start")
        self.phase_index = index
        tc = self.cfg.train
        self.optimizer, self.scheduler, parts = apply_phase(self.model, phase, tc.optimizer, tc,
                                                            self.steps_per_epoch)
        self.step = OptimizerStep(self.optimizer, self.scheduler, accumulate=tc.accumulate, grad_clip=tc.grad_clip,
                                  after_step=[self.ema.update] if self.ema is not None else [])
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
        if self.cfg.train.compile:
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
            epoch=epoch, amp=self.amp, channels_last=data.channels_last, progress=self.progress,
            train_mode=lambda m: set_train_mode(m, phase), shard=shard, mixer=self.mixer, order=order)
        val = self._evaluate(data, data.val) if data.val is not None else dict.fromkeys(("loss", *SCORES))
        return {"epoch": epoch, "phase": phase.name, "train_loss": train["loss"], "train_acc": train["acc"],
                "val_loss": val["loss"], **{f"val_{name}": val[name] for name in SCORES},
                "lr": self.optimizer.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - tick}

    def _eval_module(self, data: PhaseData) -> nn.Module:
        """`data.module` as evaluated: the average's head on cached features, else the whole average."""
        if self.ema is None:
            return data.module
        return self.ema.module.head if data.on_features else self.ema.module

    def _evaluate(self, data: PhaseData, split: ImageSource) -> dict:
        return evaluate(self._eval_module(data), split, preprocess=data.preprocess, loss_fn=self.eval_loss,
                        batch_size=self.cfg.train.eval_batch_size, num_classes=self.splits.num_classes, amp=self.amp,
                        channels_last=data.channels_last, shard=(self.ctx.rank, self.ctx.world), tta=self._tta(data))

    def _tta(self, data: PhaseData) -> str:
        """train.tta's views of each image; a head on cached features has no image to mirror or move."""
        return "off" if data.on_features else self.cfg.train.tta

    def test(self) -> tuple[dict, TestOutputs | None]:
        """Loss and accuracy on the test split, as the last phase sees its data, and (one process)
        every test image's logits for the interpretation files."""
        data = self.phase_data(self.phases[-1])
        if self.ctx.enabled:  # sharded over the processes; process 0 then computes the outputs alone
            metrics = self._evaluate(data, data.test)
            outputs = self._test_outputs(data) if self.ctx.is_main else None
            return metrics, outputs
        outputs = self._test_outputs(data)
        loss = F.cross_entropy(outputs.logits, outputs.labels, reduction="sum").item() / max(1, len(outputs.labels))
        matrix = confusion(outputs.labels.numpy(), outputs.logits.argmax(1).numpy(), self.splits.num_classes)
        return {"loss": loss, **scores(matrix)}, outputs

    def _test_outputs(self, data: PhaseData) -> "TestOutputs":
        logits, labels = predict_logits(self._eval_module(data), data.test, preprocess=data.preprocess,
                                        batch_size=self.cfg.train.eval_batch_size, amp=self.amp,
                                        channels_last=data.channels_last, tta=self._tta(data))
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
                "seed": self.seed,
                "cnnlab": __version__}

    def results(self, test: dict, wall_time_s: float, kept_epoch: int) -> dict:
        history, splits = self.history, self.splits
        epoch_times = [r["epoch_time_s"] for r in history]
        return {
            "experiment": self.cfg.experiment_name, "model": self.cfg.model, "seed": self.seed,
            "epochs": self.epochs, "epochs_trained": len(history), "kept_epoch": kept_epoch,
            "keep_best": self.cfg.train.keep_best, "stopped_early": self.stopped,
            "test_loss": test["loss"], **{f"test_{name}": test[name] for name in SCORES},
            "final_val_loss": history[-1]["val_loss"],
            **{f"final_val_{name}": history[-1].get(f"val_{name}") for name in SCORES},
            "best_val_acc": max((r["val_acc"] for r in history if r["val_acc"] is not None), default=None),
            "class_weights": self.cfg.train.class_weights, "sampler": self.cfg.data.sampler,
            "mean_epoch_time_s": float(np.mean(epoch_times)), "median_epoch_time_s": float(np.median(epoch_times)),
            "one_off_time_s": self.one_off_s, "wall_time_s": wall_time_s,
            "device": str(self.device), "precision": "bf16" if self.amp else "fp32", "num_train": len(splits.train),
            "num_val": len(splits.val) if splits.val is not None else 0, "num_test": len(splits.test),
            "preprocess": self.preprocess.state(), "feature_cache": self.used_features,
            "engine": self.engine if self.used_features else "torch",
            "processes": self.ctx.world, "global_batch_size": self.cfg.train.batch_size,
        }


def epoch_line(row: dict, epochs: int) -> str:
    val = (f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
           if row.get("val_loss") is not None else "no validation split")
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc "
            f"{100 * row['train_acc']:.2f}%  {val}  ({row['epoch_time_s']:.1f}s)")


def train_seed(cfg: ExperimentConfig, run_dir: Path, splits: DataSplits, *, seed: int, resume: bool = False,
               progress: bool = True, log: Log = print) -> dict:
    """Train one seed of `cfg` in `run_dir` (resuming from its checkpoint if asked); return its results."""
    ctx = distributed.current()
    folder = RunFolder(run_dir, writes=ctx.is_main, trackers=make_trackers(cfg, run_dir, seed))
    if not ctx.is_main:  # one process writes and prints; the others only train
        log, progress = silent, False
    with folder.held():
        return _train_seed(cfg, folder, splits, seed=seed, resume=resume, progress=progress, log=log)


def _train_seed(cfg: ExperimentConfig, folder: RunFolder, splits: DataSplits, *, seed: int, resume: bool,
                progress: bool, log: Log) -> dict:
    trainer: Trainer | None = None
    try:
        trainer = Trainer(cfg, splits, seed=seed, log=log, progress=progress)
        if resume:
            trainer.restore(folder.read_checkpoint(cfg.model), folder.checkpoint_path)
            folder.metrics(trainer.history)  # drop rows of an epoch the checkpoint lacks
            log(f"resuming {folder.path} at epoch {trainer.epochs_done + 1}/{trainer.epochs}")
        else:
            folder.record(cfg, seed=seed, device=trainer.device, summary=trainer.summary())
        folder.start_tracking(trainer.history)
        folder.status("running", epoch=trainer.epochs_done)
        start = time.perf_counter()
        trainer.fit(on_epoch_end=lambda t: folder.epoch_end(t.checkpoint(), t.history))
        kept_epoch = trainer.use_kept_weights()
        test, outputs = trainer.test()
    except KeyboardInterrupt:
        done = trainer.epochs_done if trainer else 0
        folder.status_on_the_way_out("interrupted", epoch=done)
        folder.stop_tracking("interrupted")
        raise RunInterrupted(folder.path, done) from None
    except TrainingDiverged as exc:
        folder.status_on_the_way_out("diverged", epoch=exc.epoch, step=exc.step)
        folder.stop_tracking("diverged")
        raise
    except CnnlabError as exc:
        folder.status_on_the_way_out("failed", message=str(exc))
        folder.stop_tracking("failed")
        raise
    wall = sum(r["epoch_time_s"] for r in trainer.history) if resume else time.perf_counter() - start
    results = trainer.results(test, wall_time_s=wall, kept_epoch=kept_epoch)
    if kept_epoch != trainer.epochs_done:
        log(f"kept the weights of epoch {kept_epoch} (best {cfg.train.keep_best})")
    title = f"{cfg.experiment_name} — seed {seed}"
    try:  # results.json marks a finished run: a Ctrl-C while the last files are written takes it back
        folder.finish(trainer.eval_model, record=trainer.inference_record(), results=results, title=title)
        if outputs is not None:
            folder.interpretation(outputs.logits, outputs.labels, outputs.images, splits.class_names, title=title)
        folder.finish_tracking(results)
        folder.status("finished", epoch=results["epochs"])
    except KeyboardInterrupt:
        folder.unfinish(trainer.epochs_done)
        folder.stop_tracking("interrupted")
        raise RunInterrupted(folder.path, trainer.epochs_done) from None
    log(f"seed {seed}: test loss {test['loss']:.4f}, test accuracy {100 * test['acc']:.2f}%  → {folder.path}")
    return results
