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
    """Ctrl-C or SIGTERM stopped a run; its last epoch-end checkpoint is on disk."""

    exit_code = 130


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(
            f"training diverged: the loss became {value} at epoch {epoch}, step {step}; "
            "the last good checkpoint is kept (lower the learning rate, then `cnnlab resume`)"
        )
        self.epoch, self.step, self.value = epoch, step, value
