"""A Keras-style `model.summary()` for any nn.Module.

Counts follow Keras so the lab's tables can be checked line by line: BatchNorm running
mean and variance count as non-trainable parameters (`num_batches_tracked` does not),
frozen parameters count as non-trainable, and activation-only modules (ReLU, Softmax)
are folded into the layer before them, as Keras folds `activation=` into Conv2D/Dense.
Output shapes are printed channels-last, `(None, H, W, C)`, like the lab's listings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.models.base import Classifier

_FOLDED = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Softmax, nn.Identity, nn.Sigmoid, nn.Tanh)


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    params: int


@dataclass
class ModelSummary:
    rows: list[LayerRow] = field(default_factory=list)
    trainable: int = 0
    non_trainable: int = 0

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def render(self, title: str = "") -> str:
        header = ("Layer (type)", "Output Shape", "Param #")
        body = [(f"{r.name} ({r.kind})", _shape_text(r.output_shape), f"{r.params:,}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) + 2 for i in range(3)]
        rule = "─" * sum(widths)
        lines = [f'Model: "{title}"'] if title else []
        lines += [rule, "".join(h.ljust(w) for h, w in zip(header, widths)), rule]
        lines += ["".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
        lines += [rule, f"Total params: {self.total:,}", f"Trainable params: {self.trainable:,}",
                  f"Non-trainable params: {self.non_trainable:,}", rule]
        return "\n".join(lines)


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(["None", *map(str, shape)]) + ")"


def _channels_last(shape: torch.Size) -> tuple:
    dims = tuple(shape[1:])
    return (*dims[1:], dims[0]) if len(dims) == 3 else dims


def _keras_buffers(module: nn.Module) -> int:
    """Buffers Keras counts as non-trainable weights: BatchNorm moving mean/variance."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
        return module.running_mean.numel() + module.running_var.numel()
    return 0


def _own_counts(module: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters(recurse=False) if not p.requires_grad)
    return trainable, frozen + _keras_buffers(module)


def model_summary(model: nn.Module, input_size: tuple[int, int, int], *, device: str | torch.device = "cpu"
                  ) -> ModelSummary:
    """Run one dummy batch through `model` and tabulate each leaf layer.

    A `Classifier` may name containers to report as one row each in `summary_collapse()`
    (BirdNet: the backbone's stages); any other module is shown leaf by leaf.
    """
    collapse = model.summary_collapse() if isinstance(model, Classifier) else ()
    summary = ModelSummary()
    hooks = []

    def is_leaf(name: str, module: nn.Module) -> bool:
        return name in collapse or not list(module.children())

    def record(name: str, module: nn.Module):
        def hook(_module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            t, nt = (sum(x) for x in zip(*(_own_counts(m) for m in module.modules())))
            if isinstance(module, _FOLDED) and summary.rows and t + nt == 0:
                summary.rows[-1].output_shape = _channels_last(output.shape)
                return
            summary.rows.append(LayerRow(name, type(module).__name__, _channels_last(output.shape), t + nt))
        return hook

    for name, module in model.named_modules():
        if name and is_leaf(name, module) and not any(name.startswith(p + ".") for p in collapse):
            hooks.append(module.register_forward_hook(record(name, module)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for module in model.modules():
        t, nt = _own_counts(module)
        summary.trainable += t
        summary.non_trainable += nt
    return summary



def macs_per_image(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and dense layers).

    What decides whether a model can use several CPU threads: BaseNet's 0.6 M is all
    per-op overhead; a network of hundreds of M keeps every core busy.
    """
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total
