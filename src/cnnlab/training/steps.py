"""What happens to one training batch between its loss and the weights' update: `OptimizerStep`.

The loop (loop.py) hands each batch's loss to an `OptimizerStep` and asks nothing else. The step
owns what sits between `backward` and `optimizer.step`, in this order:

    zero the gradients
    for each of `accumulate` slices of the batch:  backward(slice loss × slice share [× fp16's scale])
    unscale the gradients (fp16 only: `scaler`)
    clip the gradients' global L2 norm to `grad_clip` (0: never)
    every `before_step` hook (a callback's `before_step`: the gradients are final here)
    optimizer.step() (through the scaler with fp16: skipped if a gradient is not finite); scheduler.step()
    every `after_step` hook (the weight average's update, then the callbacks' `after_step`)

`train.accumulate: K` cuts every batch into K slices that go forward and backward one at a
time and sum their gradients before the one optimizer step: the batch's activations need 1/K of
the memory, and the update is the batch's own (the same number of steps, the same schedule,
the same sampler; exactly the same gradients for a model without BatchNorm and with an unweighted
loss — BatchNorm normalises each slice by its own statistics, as every accumulation does, and
`train.class_weights` weighs each slice's mean by its own labels). Under DDP the slices before the
last skip the gradient all-reduce (`no_sync`), as DDP's documentation recommends.

`train.grad_clip: C` rescales the gradients so their global norm is at most C
(`torch.nn.utils.clip_grad_norm_`, over the parameters the phase trains), as timm's `--clip-grad`
and nanoGPT's `grad_clip` do.

Weight decay on norms and biases is the optimizer's business, not the step's:
`train.optimizer.decay_norm_and_bias: false` puts every tensor of one dimension (BatchNorm /
LayerNorm weights, every bias) and a model's `no_weight_decay()` names in groups without decay
(optim.py's `decay_groups`), as nanoGPT's `configure_optimizers` and timm's `param_groups_weight_decay` do.

`train.amp: fp16` (training/runtime.py) hands the step a `torch.amp.GradScaler`: the loss is scaled
before `backward` so fp16's small gradients do not underflow, and the gradients are unscaled before
clipping, so `grad_clip` means the same norm in every precision.

A new trick of this kind (a gradient-noise term, a sharpness-aware step) is one more field and a
few lines in `OptimizerStep.__call__`, not a keyword of `train_one_epoch`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from cnnlab.errors import ConfigError

LossOf = Callable[[slice], torch.Tensor]


@dataclass
class OptimizerStep:
    """One optimizer step per batch, with accumulation over slices and gradient clipping."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    accumulate: int = 1
    grad_clip: float = 0.0
    after_step: list[Callable[[], None]] = field(default_factory=list)
    before_step: list[Callable[[], None]] = field(default_factory=list)
    scaler: "torch.amp.GradScaler | None" = None  # fp16's loss scaler (training/runtime.py)

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise ConfigError(f"train.accumulate: expected a value >= 1, got {self.accumulate}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip: expected a value >= 0, got {self.grad_clip}")

    def slices(self, batch: int) -> list[slice]:
        """The batch's `accumulate` slices (as equal as they can be; never an empty one)."""
        parts = min(self.accumulate, batch)
        bounds = [round(i * batch / parts) for i in range(parts + 1)]
        return [slice(a, b) for a, b in zip(bounds, bounds[1:])]

    def __call__(self, model: nn.Module, loss_of: LossOf, batch: int) -> torch.Tensor:
        """Update the weights from a batch of `batch` images whose slice `s` has the mean loss `loss_of(s)`;
        return the batch's mean loss (detached)."""
        self.optimizer.zero_grad(set_to_none=True)
        total = None
        parts = self.slices(batch)
        for index, part in enumerate(parts):
            share = (part.stop - part.start) / batch
            last = index == len(parts) - 1
            # the slices before the last add up their gradients locally; the last one all-reduces the sum
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                loss = loss_of(part)
                scaled = loss * share
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total = loss.detach() * share if total is None else total + loss.detach() * share
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clipping and the hooks see the true gradients
        if self.grad_clip > 0:
            trained = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(trained, self.grad_clip)
        for hook in self.before_step:
            hook()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when a gradient overflowed; the scale then shrinks
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        for hook in self.after_step:
            hook()
        return total
