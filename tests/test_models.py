"""Every registered model: builds, right shapes, finite outputs, a backward pass; exact lab counts."""
from __future__ import annotations

import math

import pytest
import torch

from cnnlab.models import create_model, get_model_entry, initialise, list_models, model_summary


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_and_backprops(name):
    entry = get_model_entry(name)
    pretrained = entry.preprocessing is not None
    # Pretrained models are built without weights (tests never download) on the lighter backbone.
    kwargs = {"weights": "none", "backbone": "efficientnet_lite0"} if pretrained else {}
    model = create_model(name, num_classes=7, **kwargs)
    x = torch.rand(2 if pretrained else 3, *entry.input_size)
    out = model(x)
    assert out.shape == (x.shape[0], 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert hasattr(model, "backbone") and hasattr(model, "head")
    assert model.forward_head(model.forward_features(x)).shape == (x.shape[0], 7)


def test_basenet_summary_matches_the_lab_exactly():
    summary = model_summary(create_model("basenet", num_classes=25), (3, 32, 32))
    rows = [(r.kind, r.output_shape, r.params) for r in summary.rows]
    assert rows == [
        ("Conv2d", (28, 28, 6), 456), ("MaxPool2d", (14, 14, 6), 0),
        ("Conv2d", (10, 10, 16), 2416), ("MaxPool2d", (5, 5, 16), 0),
        ("Flatten", (400,), 0), ("Linear", (50,), 20050), ("Linear", (25,), 1275),
    ]
    assert (summary.total, summary.trainable, summary.non_trainable) == (24197, 24197, 0)
    text = summary.render("basenet")
    assert "(None, 28, 28, 6)" in text and "Total params: 24,197" in text
    assert "Non-trainable params: 0" in text


def test_basenet_pp_counts_match_keras():
    summary = model_summary(create_model("basenet_pp", num_classes=25), (3, 32, 32))
    assert (summary.total, summary.trainable, summary.non_trainable) == (809945, 809305, 640)
    shapes = [r.output_shape for r in summary.rows if r.kind in ("Conv2d", "MaxPool2d", "Linear")]
    assert shapes[:5] == [(32, 32, 128), (30, 30, 128), (15, 15, 128), (11, 11, 64), (5, 5, 64)]


def test_frozen_parameters_count_as_non_trainable():
    model = create_model("basenet", num_classes=25)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    summary = model_summary(model, (3, 32, 32))
    assert summary.non_trainable == 456 + 2416 and summary.total == 24197


def test_keras_init_is_glorot_uniform_with_zero_bias():
    torch.manual_seed(0)
    model = initialise(create_model("basenet", num_classes=25), "keras")
    dense = model.head[0]
    bound = math.sqrt(6 / (400 + 50))
    assert torch.all(dense.bias == 0)
    assert dense.weight.abs().max() <= bound
    assert dense.weight.abs().max() > 0.9 * bound  # really uniform over the full range
    conv = model.backbone[0]
    assert conv.weight.abs().max() <= math.sqrt(6 / (3 * 25 + 6 * 25))


def test_unknown_model_lists_valid_names():
    from cnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="valid models: .*basenet"):
        create_model("resnet9000")
