"""`cnnlab resume PATH`: one command finishes whatever PATH belongs to.

A seed folder resumes its whole experiment (every unfinished seed), an experiment folder
that is a step of an ablation resumes the whole ablation, and so on up: the user never
needs a second command to finish what the first one started.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cnnlab.layout as layout
from cnnlab.errors import RunError
from cnnlab.studies.ablation.runner import resume_ablation
from cnnlab.studies.experiment import resume_experiment
from cnnlab.training import distributed
from cnnlab.training.learner import silent

Log = Callable[[str], None]


def _is_experiment(path: Path) -> bool:
    return layout.folder_kind(path) == "experiment"


def _is_ablation(path: Path) -> bool:
    return layout.folder_kind(path) == "ablation"


def resume(path: Path, *, device: str | None = None, progress: bool = True, log: Log = print) -> Path:
    """Continue an interrupted run folder, experiment folder or ablation folder; return what was resumed."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: run folder does not exist")
    if not distributed.current().is_main:
        log = silent
    if layout.folder_kind(path) == "run" and _is_experiment(path.parent):
        path = path.parent
        log(f"resuming the experiment this run belongs to: {path}")
    if _is_experiment(path) and _is_ablation(path.parent):
        path = path.parent
        log(f"resuming the ablation this experiment belongs to: {path}")
    if _is_ablation(path):
        resume_ablation(path, device=device, progress=progress, log=log)
    elif _is_experiment(path):
        resume_experiment(path, device=device, progress=progress, log=log)
    else:
        raise RunError(f"{path}: not a cnnlab run folder (no config.yaml, experiment.yaml or ablation.yaml)")
    return path
