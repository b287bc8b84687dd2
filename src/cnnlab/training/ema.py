"""An exponential moving average of the weights (`train.ema`), the model that is evaluated and saved.

Polyak averaging, as timm's `ModelEmaV3` and airbench do it: after every optimizer step
    average ← average + (1 − d) · (weights − average)
for every floating-point parameter and buffer (BatchNorm's running statistics are averaged
too, so the average model has statistics that match its weights); integer buffers are copied.
The decay warms up, d = min(decay, (1 + n) / (10 + n)) after n updates, so that the average
of a short run (a 5-epoch fine-tune has a few hundred steps) is not stuck at the initial
weights. Validation, test, the kept weights and model.safetensors all use the average.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """A copy of `model` whose weights follow the trained ones with decay `decay` per step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self._pairs: list[tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def track(self, model: nn.Module) -> None:
        """Average only what can change in this phase: trainable parameters and float buffers
        (the frozen ones are equal in both models). Called at the start of every phase."""
        averaged = dict(self.module.named_parameters())
        floats_avg = [averaged[name] for name, p in model.named_parameters() if p.requires_grad]
        floats_now = [p for p in model.parameters() if p.requires_grad]
        copied_avg, copied_now = [], []
        for (name, buffer), (_, average) in zip(model.named_buffers(), self.module.named_buffers()):
            if buffer.is_floating_point():
                floats_avg.append(average)
                floats_now.append(buffer)
            else:
                copied_avg.append(average)
                copied_now.append(buffer)
        self._pairs = [(floats_avg, floats_now), (copied_avg, copied_now)]

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the tracked model's weights."""
        if self._pairs is None:
            raise RuntimeError("WeightAverage.update before track(model)")
        (floats_avg, floats_now), (copied_avg, copied_now) = self._pairs
        weight = 1.0 - self.current_decay()
        if floats_avg:  # under no_grad, so the trained tensors need no detaching
            torch._foreach_lerp_(floats_avg, floats_now, weight)
        for average, now in zip(copied_avg, copied_now):
            average.copy_(now)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
