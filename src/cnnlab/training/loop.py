"""The one training loop: `train_one_epoch` and `evaluate`, shared by every experiment."""
from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from cnnlab.data.images import ImageSource
from cnnlab.config import TTA_MODES
from cnnlab.errors import TrainingDiverged
from cnnlab.training.distributed import all_sum
from cnnlab.training.mixing import BatchMixer, MixedBatch, mixed_correct, mixed_loss
from cnnlab.training.runtime import autocast
from cnnlab.training.scores import scores
from cnnlab.training.steps import OptimizerStep

Preprocess = Callable[..., torch.Tensor]


class BatchHooks(Protocol):
    """What sees each training batch (the Learner's callbacks): its start, and its end with the loss."""

    def batch_start(self, index: int, images: torch.Tensor, labels: torch.Tensor) -> None: ...

    def batch_end(self, index: int, loss: torch.Tensor, size: int) -> None: ...


# Pixels per inference batch (evaluation, predictions, feature extraction): 64 images at 224×224.
# A CNN's activations grow with the pixels it sees, so the batch shrinks as images grow (1,000
# images of 224 px peaked at 13 GB; 64 stay near 1 GB) while CIFAR's 32 px still go by the thousand.
BATCH_PIXELS = 64 * 224 * 224


def images_per_batch(data: ImageSource, limit: int) -> int:
    """train.eval_batch_size (`limit`), lowered for large images so memory stays bounded."""
    shape = data.image_shape
    pixels = shape[-2] * shape[-1] if len(shape) == 3 else 1
    return max(1, min(limit, BATCH_PIXELS // pixels))


# Test-time augmentation (train.tta): which views of each image are averaged, logits in float32.
# flip_shift is airbench's: the image and its mirror, each also moved one pixel up-left and one
# down-right (edges reflected, as the training crops pad) — six views, all like training's crops.
# The modes (TTA_MODES) are listed in config.py, which names the choices of train.tta.


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` (N, C, H, W) moved down by `dy` and right by `dx` pixels (±1), the edge reflected in."""
    height, width = x.shape[-2:]
    moved = F.pad(x, (1, 1, 1, 1), mode="reflect")[..., 1 - dy:1 - dy + height, 1 - dx:1 - dx + width]
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return moved.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of the batch `x` that `tta` (one of TTA_MODES) averages."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta: expected one of {', '.join(TTA_MODES)}, got {tta!r}")
    if tta == "off":
        return [x]
    views = [x, _shifted(x, -1, -1), _shifted(x, 1, 1)] if tta == "flip_shift" else [x]
    return views + [view.flip(3) for view in views]


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str = "off") -> torch.Tensor:
    """float32 logits of the batch `x`, the mean over the views `tta` names (see TTA_MODES)."""
    views = tta_views(x, tta)
    logits = model(views[0]).float()
    for view in views[1:]:
        logits = logits + model(view).float()
    return logits / len(views)


def _sliced(mixed: MixedBatch | None, part: slice) -> MixedBatch | None:
    """The slice `part` of a mixed batch (its partners' labels; λ is the batch's)."""
    return None if mixed is None else MixedBatch(mixed.images[part], mixed.partner[part], mixed.weight)


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(model: nn.Module, data: ImageSource, *, preprocess: Preprocess, step: OptimizerStep,
                    loss_fn: nn.Module, batch_size: int, generator: torch.Generator, epoch: int,
                    amp: bool | str = False, channels_last: bool = False,
                    train_mode: Callable[[nn.Module], None] | None = None,
                    shard: tuple[int, int] = (0, 1), mixer: BatchMixer | None = None,
                    order: torch.Tensor | None = None, hooks: BatchHooks | None = None,
                    correct_fn: Callable[[torch.Tensor, torch.Tensor, MixedBatch | None], torch.Tensor] | None = None
                    ) -> dict[str, float]:
    """One pass over `data` in the order `generator` draws (or a sampler's `order`); returns mean loss and
    accuracy.

    `batch_size` is the global batch: with `shard=(rank, world)` this process takes its
    share of each one (see batches.py). `step` turns each batch's loss into a weights' update
    (steps.py: accumulation over slices, gradient clipping, the optimizer and schedule, the weight
    average's update). With `mixer` (mixup/CutMix), the loss and the training accuracy
    weigh each image's two labels (mixing.py).

    Losses are kept on the device and checked once at the end of the epoch (no sync per
    step); a non-finite loss raises TrainingDiverged naming the first bad step. `hooks` (the
    Learner's callbacks) see each batch start and end; the loop itself prints nothing. `correct_fn`
    (logits, labels, mixed) counts a batch's right answers (the task's: training/task.py); default:
    the top class against the label.
    """
    correct_fn = correct_fn or (lambda logits, labels, mixed: mixed_correct(logits.argmax(1), labels, mixed))
    (train_mode or (lambda m: m.train()))(model)
    device = data.device
    losses, correct, seen = [], torch.zeros((), device=device), torch.zeros((), device=device)
    batches = data.batches(batch_size, shuffle=True, generator=generator, shard=shard, order=order)
    for index, (images, labels) in enumerate(batches):
        if hooks is not None:
            hooks.batch_start(index, images, labels)
        x = preprocess(images, train=True, generator=generator)
        mixed = mixer(x, labels, generator) if mixer is not None and mixer.enabled else None
        x = _prepare(x if mixed is None else mixed.images, channels_last)

        def loss_of(part: slice) -> torch.Tensor:
            nonlocal correct
            with autocast(device, amp):
                logits = model(x[part])
                loss = mixed_loss(loss_fn, logits.float(), labels[part], _sliced(mixed, part))
            correct += correct_fn(logits.detach(), labels[part], _sliced(mixed, part))
            return loss

        loss = step(model, loss_of, labels.shape[0])
        losses.append(loss * labels.shape[0])
        seen += labels.shape[0]
        if hooks is not None:  # the progress bar, a user's callback, the LR range test, ...
            hooks.batch_end(index, loss, labels.shape[0])
    # Per-step loss sums, correct and seen counts, summed over processes when distributed.
    stacked = all_sum(torch.stack(losses))
    correct, seen = all_sum(correct), float(all_sum(seen))
    finite = torch.isfinite(stacked)
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0]) + 1
        raise TrainingDiverged(epoch, step, float(stacked[step - 1] / batch_size))
    return {"loss": float(stacked.sum()) / seen, "acc": float(correct) / seen}


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSource, *, preprocess: Preprocess, loss_fn: nn.Module, batch_size: int,
             num_classes: int, amp: bool | str = False, channels_last: bool = False, shard: tuple[int, int] = (0, 1),
             tta: str = "off") -> dict[str, float]:
    """Mean loss, accuracy, balanced accuracy and macro-F1 over `data` in eval mode (no augmentation, no
    dropout; `tta`: see TTA_MODES). One `num_classes`² confusion matrix is summed on the device (and over
    processes: every process contributes one of that shape, even one whose shard holds no image)."""
    model.eval()
    device = data.device
    loss_sum = torch.zeros((), device=device)
    matrix = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    for images, labels in _eval_batches(data, images_per_batch(data, batch_size), shard):
        x = _prepare(preprocess(images, train=False), channels_last)
        with autocast(device, amp):
            logits = tta_logits(model, x, tta)
        loss_sum += loss_fn(logits, labels) * labels.shape[0]
        matrix += torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    matrix = all_sum(matrix)
    figures = scores(matrix.reshape(num_classes, num_classes).cpu().numpy())
    return {"loss": float(all_sum(loss_sum)) / max(1.0, float(matrix.sum())), **figures}


def _eval_batches(data, batch_size: int, shard: tuple[int, int]):
    """Every image exactly once over all processes: process r takes images r, r+N, ..."""
    rank, world = shard
    if world == 1:
        return data.batches(batch_size)
    return data.subset(torch.arange(rank, len(data), world)).batches(batch_size)


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageSource, *, preprocess: Preprocess, batch_size: int,
                   amp: bool | str = False, channels_last: bool = False, tta: str = "off"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image's logits (float32, on the CPU) and label, in the split's order, in eval mode."""
    model.eval()
    outputs, labels = [], []
    for images, batch_labels in data.batches(images_per_batch(data, batch_size)):
        x = _prepare(preprocess(images, train=False), channels_last)
        with autocast(data.device, amp):
            outputs.append(tta_logits(model, x, tta).cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(outputs), torch.cat(labels)
