"""Checkpoints and trained weights that load without executing code.

The resumable checkpoint is a plain dict of tensors and numbers written atomically with
`torch.save` and read back with `torch.load(weights_only=True)`; the final weights are
`model.safetensors`, which carries the model name and class names in its metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

from cnnlab.errors import CheckpointError
from cnnlab.fileio import atomic_torch_save, atomic_write_bytes, with_base

CHECKPOINT_FORMAT = 1


def base_path(checkpoint: Path, phase: int | str) -> Path:
    """The file holding the whole model as a phase with frozen parameters started it
    (`phase="*"`: the glob pattern of every such file)."""
    return Path(checkpoint).with_name(f"{Path(checkpoint).stem}-phase{phase}-start.pt")


class PhaseParts:
    """Which part of the model the checkpoints of the current phase carry — the one place that decides it.

    A phase that freezes parameters (a frozen backbone under a head) cannot change them, so writing
    them at every epoch is waste (~100 MB for ResNet50). Its checkpoints are therefore in two parts:

        the phase's base   the whole model as the phase started, in `checkpoint-phaseK-start.pt`:
                           handed out with the phase's first checkpoint only (`base_model`);
        each checkpoint    `base_phase: K` and only what can change: trainable parameters and
                           every buffer (`model`); `with_base` (fileio.py) joins the two on reading.

    The state is two facts, reset by `start` at each phase: the names the phase leaves `frozen`,
    and whether its base is already on disk (`base_written`). A run resumed inside phase K from a
    checkpoint naming base K finds it there; any other start (a new phase, a resume from a phase
    without frozen parameters) writes a new base with its first checkpoint, and save_checkpoint
    deletes the base files no checkpoint names any more.
    """

    def __init__(self) -> None:
        self.phase = 0
        self.frozen: frozenset[str] = frozenset()
        self.base_written = False

    def start(self, index: int, model: nn.Module, resumed: dict | None) -> None:
        """After phase `index` froze its parameters; `resumed`: the checkpoint being resumed, if any."""
        self.phase = index
        self.frozen = frozenset(name for name, p in model.named_parameters() if not p.requires_grad)
        self.base_written = bool(resumed and resumed.get("phase") == index and resumed.get("base_phase") == index)

    def model_entries(self, model_state: dict) -> dict:
        """The checkpoint's model entries: `model`, and with frozen parameters `base_phase` (+ `base_model` once)."""
        if not self.frozen:
            return {"model": model_state}
        entries = {"base_phase": self.phase,
                   "model": {k: v for k, v in model_state.items() if k not in self.frozen}}
        if not self.base_written:
            entries["base_model"] = model_state
            self.base_written = True
        return entries


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` atomically. A state with `base_model` (the whole model at the start of a
    phase that freezes some parameters) has it written once to its own file, and every later
    checkpoint of that phase names the file and holds only what can change: trainable
    parameters and buffers (14.5 MB of Lite0, ~100 MB of ResNet50 less per epoch). Files of
    earlier phases go once nothing names them."""
    state = dict(state)
    base = state.pop("base_model", None)
    if "base_phase" in state:
        target = base_path(path, state["base_phase"])
        if base is not None:
            atomic_torch_save(target, {"format": CHECKPOINT_FORMAT, "model": base})
        state["base_file"] = target.name
    atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **state})
    keep = state.get("base_file")
    for stale in Path(path).parent.glob(base_path(path, "*").name):
        if stale.name != keep:
            stale.unlink(missing_ok=True)


def load_checkpoint(path: Path, *, model_name: str | None = None) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint (the run never finished an epoch)") from None
    except Exception as exc:  # corrupt file, or one that needs unpickling code
        raise CheckpointError(f"{path}: not a loadable cnnlab checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cnnlab checkpoint (format {CHECKPOINT_FORMAT} expected)")
    if model_name is not None and state.get("model_name") != model_name:
        raise CheckpointError(f"{path}: checkpoint is for model '{state.get('model_name')}', "
                              f"not '{model_name}'")
    return with_base(state, path)


def load_state_strict(model: nn.Module, state_dict: dict, *, source: Path | str, model_name: str) -> None:
    """load_state_dict, turning a mismatch into one message naming the file and the model."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        detail = str(exc).replace("\n", " ")[:300]
        raise CheckpointError(f"{source}: weights do not fit model '{model_name}' ({first}: {detail})") from None


WEIGHTS_FORMAT = "cnnlab-2"


def save_weights(path: Path, model: nn.Module, record: dict) -> None:
    """The trained weights as safetensors, with `record` (model, arguments, classes, preprocessing)
    as JSON in the metadata, so the file alone is enough to predict (see inference/trained.py)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": WEIGHTS_FORMAT, "model": record["model"], "cnnlab": json.dumps(record),
                "class_names": json.dumps(record["class_names"])}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
