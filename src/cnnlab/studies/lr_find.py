"""`cnnlab lr-find EXPERIMENT`: the learning-rate range test (Smith 2015; fastai's `lr_find`, Lightning's tuner).

The experiment's `Learner` is built as `cnnlab run` builds it and trains its first phase (or
`--phase N`) on the run's own step — the phase's trainable parts and data (cached features for a
head on a frozen backbone), augmentation, mixup/CutMix, `train.accumulate`, `train.grad_clip`, the
weight average — while the `RangeTest` callback sets the learning rate before each step: for ~100
steps it grows exponentially from `start` to `end`, every optimizer group keeping its ratio to the
head's (discriminative rates stay discriminative). No validation is run. The loss is smoothed (an exponential average with bias
correction, β = 0.98) and the test stops once it is 4× its best or not finite. The suggestion is the
**steepest descent** of the smoothed loss against log(lr) before its minimum — where the loss falls
fastest — and the minimum's rate / 10 is shown beside it as a cross-check; the first tenth of the steps
is left out of both (their average is still one or two noisy losses, as fastai's skip_start says). The weights, optimizer
and random state are restored afterwards: the test changes nothing. Never the test split.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnnlab.config import ExperimentConfig, load_experiment
from cnnlab.errors import ConfigError
from cnnlab.fileio import atomic_write_json, create_unique_dir
from cnnlab.reporting.interpretation import write_rows_csv
from cnnlab.training.callbacks import Callback, Callbacks, CancelFit

Log = Callable[[str], None]


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    average, out = 0.0, []
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return out


def skipped(count: int) -> int:
    """Points left out at the start: the average of the first steps is still one or two noisy losses
    (fastai's skip_start does the same)."""
    return max(3, count // 10)


def steepest(rates: list[float], smoothed: list[float]) -> tuple[int, int]:
    """(index of the steepest fall of the smoothed loss against log(lr) before its minimum, the minimum's
    index), both after the first `skipped` points."""
    skip = min(skipped(len(smoothed)), max(len(smoothed) - 2, 0))
    low = skip + int(np.argmin(smoothed[skip:]))
    if low - skip < 2:
        return low, low
    gradient = np.gradient(np.asarray(smoothed[skip:low + 1]), np.log10(np.asarray(rates[skip:low + 1])))
    return skip + int(np.argmin(gradient)), low


class RangeTest(Callback):
    """The LR range test as a callback: before each batch the learning rate of step i is set, after it
    the loss is recorded; the fit ends after `steps` steps or once the smoothed loss is 4× its best or
    not finite."""

    order = 50

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.end, self.steps = start, end, steps
        self.rates: list[float] = []
        self.losses: list[float] = []
        self.ratios: list[float] | None = None

    def rate(self, step: int) -> float:
        return self.start * (self.end / self.start) ** (step / (self.steps - 1))

    def on_batch_start(self, learner, index, images, labels) -> None:
        groups = learner.optimizer.param_groups
        if self.ratios is None:
            self.ratios = [g["lr"] / groups[0]["lr"] for g in groups]
        lr = self.rate(len(self.rates))
        for group, ratio in zip(groups, self.ratios):
            group["lr"] = lr * ratio
        self.rates.append(lr)

    def on_batch_end(self, learner, index, loss, size) -> None:
        value = float(loss)
        self.losses.append(value)
        smoothed = smooth(self.losses)
        if len(self.losses) >= self.steps or not math.isfinite(value) or smoothed[-1] > 4 * min(smoothed):
            raise CancelFit


def range_test(learner, *, phase: int = 0, start: float = 1e-7, end: float = 10.0, steps: int = 100) -> RangeTest:
    """Run the range test on `learner`'s phase `phase`, then put back its weights, weight average, optimizer
    state and the random generators: the learner is as it was."""
    from cnnlab.training.device import rng_state, set_rng_state

    saved_model = copy.deepcopy(learner.model.state_dict())
    saved_ema = copy.deepcopy(learner.ema.state_dict()) if learner.ema is not None else None
    saved_rng, saved_history = rng_state(), list(learner.history)
    test = RangeTest(start, end, steps)
    learner.callbacks = Callbacks([test])  # the range test alone: nothing kept, logged, checkpointed or stopped
    learner.validate = False
    try:
        learner.fit(only_phase=phase)
    finally:
        learner.model.load_state_dict(saved_model)
        if saved_ema is not None:
            learner.ema.load_state_dict(saved_ema)
        learner.history = saved_history
        set_rng_state(saved_rng)
    return test


def lr_find(experiment: str | ExperimentConfig, *, overrides: dict[str, Any] | None = None, phase: int = 0,
            start: float = 1e-7, end: float = 10.0, steps: int = 100, out: str | None = None, log: Log = print,
            origins: dict[str, str] | None = None, splits=None) -> dict:
    """The range test of `experiment` (a preset or file, with `overrides`; or a configuration as it is, and
    optionally the data already loaded: `cnnlab.Learner.lr_find`)."""
    from cnnlab.data.batches import num_batches
    from cnnlab.studies.experiment import load_data
    from cnnlab.studies.preflight import check_experiment
    from cnnlab.training.learner import Learner, silent
    from cnnlab.training.phases import resolve_phases

    if not 0 < start < end or steps < 5:
        raise ConfigError("lr-find: expected 0 < --start < --end and --steps >= 5")
    if isinstance(experiment, ExperimentConfig):
        cfg = copy.deepcopy(experiment)  # its phase's length is changed below
    else:
        cfg = load_experiment(experiment, overrides=overrides, origins=origins)
    phases = resolve_phases(cfg.train)
    if not 0 <= phase < len(phases):
        raise ConfigError(f"--phase {phase}: {cfg.experiment_name} has phases 0..{len(phases) - 1}")
    check_experiment(cfg, data_given=splits is not None)
    splits = replace(splits if splits is not None else load_data(cfg, log=log), test=None)  # the test split is
    # not even handed over
    # the phase lasts as many epochs as `steps` steps need (the test ends the fit at its last step)
    epochs = math.ceil(steps / num_batches(len(splits.train), cfg.train.batch_size))
    if cfg.train.phases:
        cfg.train.phases[phase].epochs = epochs
    else:
        cfg.train.epochs = epochs
    learner = Learner(cfg, splits, seed=cfg.seeds[0], log=silent, progress=False, standard=False)
    tick = time.perf_counter()
    test = range_test(learner, phase=phase, start=start, end=end, steps=steps)
    rates, losses = test.rates[:len(test.losses)], test.losses
    smoothed = smooth(losses)
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    rates_f, smoothed_f = [rates[i] for i in finite], [smoothed[i] for i in finite]
    pick, low = steepest(rates_f, smoothed_f)
    suggestion, minimum = rates_f[pick], rates_f[low]
    folder = create_unique_dir(Path(out or cfg.out) / "lr-find" / cfg.experiment_name)
    key = f"train.phases.{phase}.lr" if cfg.train.phases else "train.optimizer.lr"
    result = {"experiment": cfg.experiment_name, "phase": learner.phases[phase].name, "suggestion": suggestion,
              "rule": "steepest descent of the smoothed loss (before its minimum)", "minimum_lr": minimum,
              "minimum_over_10": minimum / 10, "steps_run": len(losses), "start": start, "end": end,
              "stopped_early": len(losses) < steps, "seconds": time.perf_counter() - tick, "key": key,
              "folder": str(folder)}
    write_rows_csv(folder / "lr_find.csv", [{"step": i, "lr": r, "loss": l, "smoothed": s}
                                            for i, (r, l, s) in enumerate(zip(rates, losses, smoothed))])
    atomic_write_json(folder / "lr_find.json", result)
    shown = skipped(len(smoothed_f))
    _plot(folder / "lr_find.png", rates_f[shown:], smoothed_f[shown:], suggestion, minimum, cfg.experiment_name)
    log(f"learning-rate range test of {cfg.experiment_name} (phase '{learner.phases[phase].name}'): {len(losses)} "
        f"steps from {start:g} to {rates[-1]:.3g}{' (stopped: the loss diverged)' if result['stopped_early'] else ''}")
    log(f"suggested learning rate: {suggestion:.2e} (steepest descent of the smoothed loss; the minimum is at "
        f"{minimum:.2e}, its tenth {minimum / 10:.2e}); plot: {folder / 'lr_find.png'}")
    log(f"use it: cnnlab run {experiment if isinstance(experiment, str) else cfg.experiment_name} "
        f"--set {key}={suggestion:.2e}")
    return result


def _plot(path: Path, rates: list[float], smoothed: list[float], suggestion: float, minimum: float, title: str) -> None:
    from cnnlab.reporting.curves import plt  # Agg, names drawn as written (no TeX parsing)

    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.plot(rates, smoothed, color="#2f6fdb")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss (smoothed)")
    axes.axvline(suggestion, color="#d9480f", linestyle="--", label=f"suggestion {suggestion:.1e} (steepest descent)")
    axes.axvline(minimum / 10, color="#868e96", linestyle=":", label=f"minimum / 10: {minimum / 10:.1e}")
    top = min(max(smoothed), 4 * min(smoothed))
    axes.set_ylim(min(smoothed) - 0.05 * abs(top - min(smoothed)), top)
    axes.set_title(f"{title}: learning-rate range test")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
