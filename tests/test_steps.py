"""The step between a batch's loss and the weights' update (training/steps.py): gradient accumulation,
gradient clipping, and weight decay kept off norms and biases (training/optim.py's decay_groups)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab.config import OptimizerConfig, PhaseConfig, TrainConfig, load_experiment
from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.studies import run_experiment
from cnnlab.training.optim import build_optimizer, build_scheduler
from cnnlab.training.phases import apply_phase
from cnnlab.training.steps import OptimizerStep


def _run(npz_data, tmp_path, name: str, **overrides) -> tuple[dict, dict]:
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "out": str(tmp_path / name),
                                                 "device": "cpu", "seeds": [2], "train.epochs": 2,
                                                 "train.batch_size": 16, **overrides})
    folder = run_experiment(cfg, progress=False, log=lambda s: None) / "seed-2"
    return json.loads((folder / "results.json").read_text()), load_file(str(folder / "model.safetensors"))


def test_accumulating_slices_gives_the_whole_batch_update(npz_data, tmp_path):
    """BaseNet has no BatchNorm and the loss is unweighted: the sum of the slices' gradients is the batch's
    gradient, so 4 slices of 4 images train the weights 1 batch of 16 does, up to float summation order."""
    whole, whole_weights = _run(npz_data, tmp_path, "whole")
    sliced, sliced_weights = _run(npz_data, tmp_path, "sliced", **{"train.accumulate": 4})
    assert whole_weights.keys() == sliced_weights.keys()
    for key in whole_weights:
        torch.testing.assert_close(sliced_weights[key], whole_weights[key], rtol=1e-4, atol=1e-5)
    assert sliced["test_acc"] == pytest.approx(whole["test_acc"], abs=1 / 40 + 1e-9)  # at most one image moves


def test_slices_cover_the_batch_once_and_never_come_out_empty():
    step = OptimizerStep(*_sgd(nn.Linear(2, 2)), accumulate=4)
    for batch in (1, 3, 4, 10, 17):
        parts = step.slices(batch)
        assert len(parts) == min(4, batch) and all(p.stop > p.start for p in parts)
        assert [i for p in parts for i in range(p.start, p.stop)] == list(range(batch))


def _sgd(model: nn.Module, lr: float = 1.0, weight_decay: float = 0.0):
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(name="sgd", lr=lr, momentum=0.0,
                                                                    weight_decay=weight_decay))
    return optimizer, build_scheduler(optimizer, TrainConfig(), steps_per_epoch=1, epochs=1)


def test_gradient_clipping_bounds_the_global_norm_of_what_the_step_applies():
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    x, y = torch.randn(32, 8) * 100, torch.randint(0, 3, (32,))  # a large loss: gradients far above the bound
    norms = []
    optimizer, scheduler = _sgd(model)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: norms.append(
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()))
    before = [p.detach().clone() for p in model.parameters()]
    OptimizerStep(optimizer, scheduler, grad_clip=0.5)(model, lambda s: nn.functional.cross_entropy(model(x[s]), y[s]),
                                                       32)
    assert norms[0] == pytest.approx(0.5, rel=1e-5)
    moved = torch.linalg.vector_norm(torch.stack([(p - b).norm() for p, b in zip(model.parameters(), before)]))
    assert moved.item() == pytest.approx(0.5, rel=1e-5)  # lr 1: the step is the clipped gradient
    # ... where the gradient itself was far above the bound
    again = nn.Linear(8, 3)
    again.load_state_dict(dict(zip(("weight", "bias"), before)))
    nn.functional.cross_entropy(again(x), y).backward()
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in again.parameters()])) > 5


def test_clipping_changes_a_run_and_is_recorded_in_its_config(npz_data, tmp_path):
    plain, _ = _run(npz_data, tmp_path, "plain")
    clipped, _ = _run(npz_data, tmp_path, "clipped", **{"train.grad_clip": 1e-3})
    assert clipped["test_loss"] != plain["test_loss"]
    (config,) = (tmp_path / "clipped").glob("*/*/seed-2/config.yaml")
    assert "grad_clip: 0.001" in config.read_text()


@pytest.mark.parametrize("key, value, fragment", [
    ("train.accumulate", 0, "expected a value >= 1"),
    ("train.grad_clip", -1.0, "expected a value >= 0"),
    ("train.optimizer.decay_norm_and_bias", "no", "expected true or false"),
])
def test_the_new_keys_refuse_values_out_of_range(key, value, fragment):
    with pytest.raises(ConfigError, match=fr"key '{key}': {fragment}"):
        load_experiment("basenet", overrides={key: value})


def test_norms_and_biases_are_left_undecayed_when_asked():
    model = create_model("basenet_pp", num_classes=5)
    tc = TrainConfig(optimizer=OptimizerConfig(name="sgd", weight_decay=5e-4, decay_norm_and_bias=False))
    optimizer, _, _ = apply_phase(model, PhaseConfig(), tc.optimizer, tc, steps_per_epoch=1)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(decay_of) == len(list(model.parameters()))  # every parameter once
    for name, param in model.named_parameters():
        assert decay_of[id(param)] == (0.0 if param.ndim == 1 else 5e-4), name
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # the default keeps the lab's (Keras's) behaviour: one decay for everything
    tc.optimizer.decay_norm_and_bias = True
    optimizer, _, _ = apply_phase(model, PhaseConfig(), tc.optimizer, tc, steps_per_epoch=1)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {5e-4}


def test_an_undecayed_batchnorm_scale_does_not_shrink_under_decay_alone():
    model = create_model("basenet_pp", num_classes=5)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    for flag, shrinks in ((True, True), (False, False)):
        bn.weight.data.fill_(1.0)
        tc = TrainConfig(optimizer=OptimizerConfig(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.1,
                                                   decay_norm_and_bias=flag))
        optimizer, _, _ = apply_phase(model, PhaseConfig(), tc.optimizer, tc, steps_per_epoch=1)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # decay is the only force
        optimizer.step()
        assert (bn.weight.data.max().item() < 1.0) is shrinks


def test_a_vit_keeps_its_position_embedding_and_class_token_undecayed():
    pytest.importorskip("timm")
    model = create_model("birdnet_v0", num_classes=3, backbone="timm/test_vit", weights="none", image_size=160)
    tc = TrainConfig(optimizer=OptimizerConfig(name="adamw", weight_decay=0.05, decay_norm_and_bias=False))
    optimizer, _, _ = apply_phase(model, PhaseConfig(), tc.optimizer, tc, steps_per_epoch=1)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    exempt = [n for n in named if n.endswith(("pos_embed", "cls_token"))]
    assert exempt and all(decay_of[id(named[n])] == 0.0 for n in exempt)
    assert all(decay_of[id(p)] == 0.05 for n, p in named.items() if p.ndim >= 2 and n not in exempt)
