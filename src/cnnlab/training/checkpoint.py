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
from cnnlab.fileio import atomic_torch_save, atomic_write_bytes

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **state})


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
    return state


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
