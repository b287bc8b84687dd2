"""The one exception family that means "the user's input is wrong", never "cnnlab is broken".

The CLI prints a `CnnlabError` as a single line and exits non-zero; any other exception
is a bug and keeps its traceback. Each message names the file, line or key at fault and
says what was expected.
"""
from __future__ import annotations

import os
import sys


class CnnlabError(Exception):
    """Base class for errors a user can fix."""


_CREDENTIALS = None


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it masked: `postgresql://ann:***@db/x` (a storage or tracking URL
    given on the command line must not reach a terminal, a log or a report)."""
    global _CREDENTIALS
    if _CREDENTIALS is None:
        import re

        _CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)(?=@)")
    return _CREDENTIALS.sub(lambda m: m.group("head") + "***", str(text))


class ConfigError(CnnlabError):
    """An experiment file or option is malformed (unknown key, wrong type, impossible value)."""


class DataError(CnnlabError):
    """A dataset is missing, malformed, or points somewhere it must not."""


class CheckpointError(CnnlabError):
    """A checkpoint or weights file cannot be used for this model or run."""


class RunError(CnnlabError):
    """A run folder cannot be created, resumed or written."""


class DiskFull(RunError):
    """A file could not be written for want of space; the files written before it are intact."""

    def __init__(self, path, needed: int, free: int, resume_path=None):
        self.path, self.needed, self.free, self.resume_path = path, needed, free, resume_path
        then = f"cnnlab resume {resume_path}" if resume_path else "run it again"
        super().__init__(f"{path}: no space left on the disk of {os.path.dirname(path) or '.'} "
                         f"(writing it needs {_mb(needed)}, {_mb(free)} free); free some space, then: {then}")

    def resume_from(self, path) -> "DiskFull":
        return DiskFull(self.path, self.needed, self.free, path)


def _mb(size: int) -> str:
    return f"{size / 2 ** 20:.1f} MB" if size >= 2 ** 20 else f"{size / 1024:.1f} kB"


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


def warn(message: str) -> None:
    """One line on stderr for what a run survives but the user should know (a damaged cache entry)."""
    print(f"cnnlab: warning: {message}", file=sys.stderr, flush=True)
