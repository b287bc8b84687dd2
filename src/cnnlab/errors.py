"""The one exception family that means "the user's input is wrong", never "cnnlab is broken".

The CLI prints a `CnnlabError` as a single line and exits non-zero; any other exception
is a bug and keeps its traceback. Each message names the file, line or key at fault and
says what was expected.
"""
from __future__ import annotations


class CnnlabError(Exception):
    """Base class for errors a user can fix."""


class ConfigError(CnnlabError):
    """An experiment file or option is malformed (unknown key, wrong type, impossible value)."""


class DataError(CnnlabError):
    """A dataset is missing, malformed, or points somewhere it must not."""


class CheckpointError(CnnlabError):
    """A checkpoint or weights file cannot be used for this model or run."""


class RunError(CnnlabError):
    """A run folder cannot be created, resumed or written."""


class RunInterrupted(CnnlabError):
    """Ctrl-C or SIGTERM stopped a run; its last epoch-end checkpoint is on disk.

    Each layer that catches it on the way out (experiment, ablation) re-raises it with
    `resume_from(its folder)`, so the message names the one folder that finishes everything.
    """

    exit_code = 130

    def __init__(self, run_dir, epochs_done: int, resume_path=None):
        self.run_dir, self.epochs_done = run_dir, epochs_done
        self.resume_path = resume_path or run_dir
        saved = f"epochs 1..{epochs_done} of {run_dir} are saved" if epochs_done else f"no epoch of {run_dir} finished"
        super().__init__(f"interrupted; {saved}. Continue with: cnnlab resume {self.resume_path}")

    def resume_from(self, path) -> "RunInterrupted":
        return RunInterrupted(self.run_dir, self.epochs_done, path)


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(
            f"training diverged: the loss became {value} at epoch {epoch}, step {step}; "
            "the last good checkpoint is kept (lower the learning rate, then `cnnlab resume`)"
        )
        self.epoch, self.step, self.value = epoch, step, value
