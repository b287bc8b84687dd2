"""Everything around the training loop, as callbacks the `Learner` calls at named moments.

The hooks, in the order one fit calls them (fastai's and Lightning's names, nearly):

    on_fit_start
      on_phase_start(index, phase)     before the phase's optimizer and data exist; raise CancelPhase
                                       to skip the phase (early stopping already ended it)
        on_epoch_start(epoch)
          on_batch_start(index, images, labels)
            before_step                 gradients final (accumulated, unscaled, clipped); before optimizer.step
            after_step                  after optimizer.step, the schedule and the weight average
          on_batch_end(index, loss, size)   loss: the batch's mean, a tensor still on the device
        on_epoch_end(row)               row: the epoch's metrics.csv row, already in learner.history
      on_phase_end(index, phase)
    on_fit_end
    on_test_end(results, outputs)       after the kept weights were tested (not when there is no test split)
    on_fail(state, message)             interrupted | diverged | failed, on the way out

A callback raises `CancelPhase` to end the current phase after the hook (early stopping) or
`CancelFit` to end the fit (the LR range test). Callbacks run in ascending `order`; the built-in
ones are spaced so a user's (order 100 by default) sees the epoch after it was checkpointed,
logged and judged. Every hook is a no-op here: subclass and write the ones you need.

Built in (each wired by `studies/` where `cnnlab run` wired it by hand before):

    order 10  KeepBest        train.keep_best: the best epoch's weights, tested and saved at the end
    order 20  RunFolderWriter the run folder: record, checkpoint + metrics.csv every epoch, status,
                              weights, results and interpretation files (training/run_folder.py)
    order 25  Trackers        --log tensorboard / mlflow: each epoch after the files have it
    order 30  Progress        a tqdm.auto bar per epoch (a terminal or Jupyter) and the epoch lines with an ETA
    order 40  EarlyStopping   train.early_stopping: ends a phase whose monitor stopped improving
    order 50  (studies)       Optuna's reporting and pruning (studies/tune.py), the LR range test (studies/lr_find.py)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cnnlab.training.selection import improves, should_stop

if TYPE_CHECKING:  # annotations only: `cnnlab --help` imports no torch ("Learner" is training/learner.py's)
    import torch


class CancelPhase(Exception):
    """Raised by a callback: end the current phase now (the next one starts)."""


class CancelFit(Exception):
    """Raised by a callback: end the fit now (what has trained stays; the test still runs if asked)."""


class Callback:
    """Subclass and write the hooks you need; `order` places it among the others (lower first)."""

    order: int = 100

    def on_fit_start(self, learner: "Learner") -> None: ...
    def on_phase_start(self, learner: "Learner", index: int, phase) -> None: ...
    def on_epoch_start(self, learner: "Learner", epoch: int) -> None: ...
    def on_batch_start(self, learner: "Learner", index: int, images: torch.Tensor, labels: torch.Tensor) -> None: ...
    def before_step(self, learner: "Learner") -> None: ...
    def after_step(self, learner: "Learner") -> None: ...
    def on_batch_end(self, learner: "Learner", index: int, loss: torch.Tensor, size: int) -> None: ...
    def on_epoch_end(self, learner: "Learner", row: dict) -> None: ...
    def on_phase_end(self, learner: "Learner", index: int, phase) -> None: ...
    def on_fit_end(self, learner: "Learner") -> None: ...
    def on_test_end(self, learner: "Learner", results: dict, outputs) -> None: ...
    def on_fail(self, learner: "Learner", state: str, message: str) -> None: ...


HOOKS = ("on_fit_start", "on_phase_start", "on_epoch_start", "on_batch_start", "before_step", "after_step",
         "on_batch_end", "on_epoch_end", "on_phase_end", "on_fit_end", "on_test_end", "on_fail")


class Callbacks:
    """The learner's callbacks in order; `callbacks.on_epoch_end(learner, row)` calls each one's hook."""

    def __init__(self, callbacks=()):
        self.items = sorted(callbacks, key=lambda c: c.order)  # stable: equal orders keep the given order
        # each hook bound once, to the callbacks that wrote it: the batch hooks run thousands of times an epoch
        for hook in HOOKS:
            setattr(self, hook, _caller([getattr(c, hook) for c in self.items
                                         if getattr(type(c), hook) is not getattr(Callback, hook)]))

    def __iter__(self):
        return iter(self.items)


def _caller(methods: list) -> Callable[..., None]:
    def call(*args, **kwargs) -> None:
        for method in methods:
            method(*args, **kwargs)
    return call


class KeepBest(Callback):
    """train.keep_best: remember the weights of the epoch with the best monitored figure (on the CPU);
    `Learner.use_kept_weights` loads them before the test. The kept copy goes into each checkpoint."""

    order = 10

    def __init__(self, monitor: str):
        self.monitor = monitor

    def on_epoch_end(self, learner: "Learner", row: dict) -> None:
        best = learner.best
        if improves(row[self.monitor], best["value"] if best else None, self.monitor):
            learner.best = {"epoch": row["epoch"], "value": row[self.monitor],
                            "model": {k: v.detach().cpu().clone() for k, v in learner.eval_model.state_dict().items()}}


class EarlyStopping(Callback):
    """train.early_stopping: end a phase once its monitor has not improved by more than min_delta for
    `patience` epochs; a resumed run skips a phase that had already stopped."""

    order = 40

    def __init__(self, settings):
        self.settings = settings

    def _stops(self, learner: "Learner", phase, epochs: range) -> bool:
        stops = should_stop([r for r in learner.history if r["epoch"] in epochs], self.settings)
        if stops and phase.name not in learner.stopped:
            learner.stopped.append(phase.name)
        return stops

    def on_phase_start(self, learner: "Learner", index: int, phase) -> None:
        if self._stops(learner, phase, learner.phase_spans[index]):
            raise CancelPhase

    def on_epoch_end(self, learner: "Learner", row: dict) -> None:
        epochs, phase = learner.phase_spans[learner.phase_index], learner.phases[learner.phase_index]
        if row["epoch"] != epochs[-1] and self._stops(learner, phase, epochs):
            s = self.settings
            learner.log(f"early stopping: {s.monitor} has not improved by more than {s.min_delta} for "
                        f"{s.patience} epoch(s); phase '{phase.name}' ends at epoch {row['epoch']}")
            raise CancelPhase


class Progress(Callback):
    """A progress bar per epoch (tqdm.auto: a terminal's or Jupyter's) when asked, and always the epoch
    line, with the time left for the whole run estimated from the epochs of the current phase."""

    order = 30

    def __init__(self, bar: bool = True):
        self.bar_enabled, self.bar = bar, None

    def on_epoch_start(self, learner: "Learner", epoch: int) -> None:
        if self.bar_enabled:
            from tqdm.auto import tqdm

            # disable=None: a bar in a terminal or Jupyter, none in a log file (its carriage returns would litter it)
            self.bar = tqdm(total=learner.steps_per_epoch, desc=f"epoch {epoch}", leave=False, unit="batch",
                            disable=None)

    def on_batch_end(self, learner: "Learner", index: int, loss: torch.Tensor, size: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 25 == 0:
                self.bar.set_postfix(loss=f"{float(loss):.3f}")

    def on_epoch_end(self, learner: "Learner", row: dict) -> None:
        self._close()
        line = epoch_line(row, learner.epochs)
        left = remaining_seconds(learner, row)
        learner.log(line + (f"  ETA {format_duration(left)}" if left and left >= 1 else ""))

    def on_fail(self, learner: "Learner", state: str, message: str) -> None:
        self._close()

    def on_fit_end(self, learner: "Learner") -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def remaining_seconds(learner: "Learner", row: dict) -> float | None:
    """The run's time left: each later epoch of this phase at this phase's median epoch time; a later
    phase's epochs at that too (unknown until it starts: a head on cached features is far faster than a
    fine-tune, so the estimate firms up as each phase begins). None after the last epoch."""
    left = learner.epochs - row["epoch"]
    if left <= 0:
        return None
    phase = row.get("phase")
    times = sorted(r["epoch_time_s"] for r in learner.history if r.get("phase") == phase) or [row["epoch_time_s"]]
    return left * times[len(times) // 2]


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def epoch_line(row: dict, epochs: int) -> str:
    lead = ("mAP", "val_map") if "val_map" in row else ("acc", "val_acc")  # multi-label rows lead with mAP
    val = (f"val loss {row['val_loss']:.4f} {lead[0]} {100 * row[lead[1]]:.2f}%"
           if row.get("val_loss") is not None else "no validation split")
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc "
            f"{100 * row['train_acc']:.2f}%  {val}  ({row['epoch_time_s']:.1f}s)")


class RunFolderWriter(Callback):
    """What `cnnlab run` writes into a seed's folder, at the moments the Learner reaches:
    the record (or, resuming, metrics.csv cut back to the checkpoint), the trackers, status.json;
    a checkpoint and metrics.csv every epoch; weights, results, curves and the interpretation files
    after the test; the state on the way out of a failure (training/run_folder.py writes each file)."""

    order = 20

    def __init__(self, folder, *, resumed: bool = False, checkpoints: bool = True):
        self.folder, self.resumed, self.checkpoints, self.finishing = folder, resumed, checkpoints, False

    def on_fit_start(self, learner: "Learner") -> None:
        if self.resumed:
            self.folder.metrics(learner.history)  # drop rows of an epoch the checkpoint lacks
        else:
            self.folder.record(learner.cfg, seed=learner.seed, device=learner.device, summary=learner.summary())
        self.folder.status("running", epoch=learner.epochs_done)

    def on_epoch_end(self, learner: "Learner", row: dict) -> None:
        self.folder.epoch_end(learner.checkpoint() if self.checkpoints else None, learner.history)

    def on_fit_end(self, learner: "Learner") -> None:
        if learner.splits.test is None and learner.history:  # a tune trial: no test, no weights
            self.folder.finish_validation_only(title=f"{learner.cfg.experiment_name} — seed {learner.seed}",
                                               epoch=learner.epochs_done)

    def on_test_end(self, learner: "Learner", results: dict, outputs) -> None:
        self.finishing = True
        title = f"{learner.cfg.experiment_name} — seed {learner.seed}"
        self.folder.finish(learner.eval_model, record=learner.inference_record(), results=results, title=title)
        if outputs is not None and outputs.thresholds is not None:  # multi-label
            self.folder.multilabel_interpretation(outputs.logits, outputs.labels, outputs.images,
                                                  learner.splits.class_names, outputs.thresholds, title=title)
        elif outputs is not None:
            self.folder.interpretation(outputs.logits, outputs.labels, outputs.images, learner.splits.class_names,
                                       title=title)
            if outputs.trust is not None:
                self.folder.trust(outputs.trust, title=title)
        self.folder.status("finished", epoch=results["epochs"])

    def on_fail(self, learner: "Learner", state: str, message: str) -> None:
        if self.finishing:  # interrupted while the last files were written: no results.json, a resume tests again
            self.folder.unfinish(learner.epochs_done)
        elif state == "failed":
            self.folder.status_on_the_way_out(state, message=message)
        elif state == "diverged":
            self.folder.status_on_the_way_out(state, **(learner.diverged or {"epoch": learner.epochs_done}))
        else:
            self.folder.status_on_the_way_out(state, epoch=learner.epochs_done)


class Trackers(Callback):
    """The experiment trackers of `--log tensorboard / mlflow` (training/trackers.py): opened as the fit starts
    (a resumed run replays its metrics.csv rows into them), fed each epoch after the run folder wrote it (so a
    tracker never holds an epoch the files lack), closed with the results or with the state a run stopped in."""

    order = 25

    def __init__(self, trackers: list, run_dir=None):
        self.trackers, self.run_dir = list(trackers), run_dir  # the folder whose figures a tracker uploads

    def on_fit_start(self, learner: "Learner") -> None:
        for tracker in self.trackers:
            tracker.start(learner.history)

    def on_epoch_end(self, learner: "Learner", row: dict) -> None:
        for tracker in self.trackers:
            tracker.epoch(row)

    def on_test_end(self, learner: "Learner", results: dict, outputs) -> None:
        for tracker in self.trackers:
            tracker.finish(results, self.run_dir)

    def on_fail(self, learner: "Learner", state: str, message: str) -> None:
        self.stop(state)

    def stop(self, state: str) -> None:
        for tracker in self.trackers:
            try:
                tracker.stop(state)
            except Exception:  # noqa: BLE001 — the run's own state is what matters on the way out
                pass
