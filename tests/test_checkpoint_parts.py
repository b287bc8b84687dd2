"""A phase with frozen parameters writes them once; every checkpoint still loads whole, or says what is missing."""
from __future__ import annotations

import pytest
import torch

from cnnlab.errors import CheckpointError
from cnnlab.fileio import read_state_file
from cnnlab.training.checkpoint import load_checkpoint, save_checkpoint


def _state(epoch: int, *, base: dict | None = None, phase: int | None = 0) -> dict:
    state = {"model_name": "m", "epoch": epoch, "model": {"head.weight": torch.full((2,), float(epoch))}}
    if phase is not None:
        state["base_phase"] = phase
    if base is not None:
        state["base_model"] = base
    return state


def test_the_frozen_part_is_written_once_and_completes_every_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    whole = {"backbone.weight": torch.arange(4.0), "head.weight": torch.zeros(2)}
    save_checkpoint(path, _state(1, base=whole))
    base = tmp_path / "checkpoint-phase0-start.pt"
    written = base.stat().st_mtime_ns
    save_checkpoint(path, _state(2))
    assert base.stat().st_mtime_ns == written  # not rewritten by the phase's later epochs
    loaded = load_checkpoint(path, model_name="m")
    assert torch.equal(loaded["model"]["backbone.weight"], whole["backbone.weight"])
    assert torch.equal(loaded["model"]["head.weight"], torch.full((2,), 2.0))  # the epoch's own tensors win
    assert set(read_state_file(path)) == {"backbone.weight", "head.weight"}  # --weights checkpoint.pt works too
    save_checkpoint(path, _state(3, phase=None))  # a phase training everything: whole again, old file removed
    assert not base.exists()


def test_a_missing_frozen_part_is_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(1, base={"backbone.weight": torch.ones(1)}))
    (tmp_path / "checkpoint-phase0-start.pt").unlink()
    with pytest.raises(CheckpointError, match="checkpoint-phase0-start.pt, which is missing"):
        load_checkpoint(path, model_name="m")
