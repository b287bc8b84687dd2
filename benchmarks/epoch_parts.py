"""Where a training epoch's time goes, part by part, through the real loop (training/loop.py).

    python benchmarks/epoch_parts.py [cifar_recipe] [--steps 40] [--set KEY=VALUE ...]

Builds the preset's Learner on ../shared/data (CIFAR-25 for the CIFAR presets), takes the first
`--steps` batches of the training split, runs one warm-up epoch on them, then one timed epoch
with clocks around each part of `train_one_epoch`: the batch (reading and indexing the images),
preprocessing (augmentation and normalisation), mixing (CutMix/mixup), the forward pass, the
loss, the backward pass (with zero_grad), the optimizer step, the schedule, the weight average's
update and the bookkeeping left over; then the validation pass as the trainer runs it (with
TTA when the preset has it). CPU work is synchronous, so the clocks need no sync. A full epoch
is the per-step figures times the steps an epoch has (`steps_per_epoch`) plus the validation.
Prints a table and writes results/epoch_parts.json, one case per preset and overrides (the
other cases recorded there stay).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch

from _common import RESULTS, SHARED_DATA, write_json

from cnnlab.cli.main import parse_set_options
from cnnlab.config import load_experiment
from cnnlab.data.batches import num_batches
from cnnlab.errors import CnnlabError
from cnnlab.models.summary import macs_per_image
from cnnlab.studies.experiment import load_data
from cnnlab.training.loop import evaluate, train_one_epoch
from cnnlab.training.steps import OptimizerStep
from cnnlab.training.learner import Learner


class Clocks:
    """Seconds per named part, summed over the timed epoch."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.on = False
        self.mark = time.perf_counter()

    def lap(self, part: str) -> None:
        """Charge the time since the previous lap to `part`."""
        now = time.perf_counter()
        if self.on:
            self.totals[part] += now - self.mark
        self.mark = now


def timed(clocks: Clocks, part: str, fn):
    """`fn`, with the time before it charged to "bookkeeping" and its own time to `part`."""
    def call(*args, **kwargs):
        clocks.lap("bookkeeping")
        out = fn(*args, **kwargs)
        clocks.lap(part)
        return out
    return call


class TimedBatches:
    """The training split, its batches' reading charged to "batch"."""

    def __init__(self, source, clocks: Clocks):
        self.source, self.clocks = source, clocks
        self.device = source.device

    def __len__(self):
        return len(self.source)

    def batches(self, *args, **kwargs):
        iterator = iter(self.source.batches(*args, **kwargs))
        while True:
            self.clocks.lap("bookkeeping")
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.clocks.lap("batch")
            yield batch


class TimedMixer:
    def __init__(self, mixer, clocks: Clocks):
        self.enabled = mixer.enabled
        self.call = timed(clocks, "mixing", mixer)

    def __call__(self, *args):
        return self.call(*args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", nargs="?", default="cifar_recipe")
    ap.add_argument("--data", default=str(SHARED_DATA / "cifar100-subset25"))
    ap.add_argument("--steps", type=int, default=40, help="training batches timed (default 40)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a configuration override")
    ap.add_argument("--phase", type=int, default=0, help="the fine-tuning phase timed (birdnet_recipe: 1, the "
                                                         "fine-tune; default 0)")
    args = ap.parse_args()
    try:
        sets, origins = parse_set_options(args.set)
        overrides = {"data.path": args.data, **sets}
        cfg = load_experiment(args.preset, overrides=overrides, origins=origins)
    except CnnlabError as exc:
        ap.error(str(exc))
    splits = load_data(cfg, log=lambda line: None)
    trainer = Learner(cfg, splits, seed=1, log=lambda line: None, progress=False)
    if not 0 <= args.phase < len(trainer.phases):
        ap.error(f"--phase {args.phase}: {args.preset} has phases 0..{len(trainer.phases) - 1}")
    data, model = trainer.start_phase(args.phase)
    tc = cfg.train
    train = data.train.subset(torch.arange(min(len(data.train), args.steps * tc.batch_size)))
    clocks = Clocks()

    forward_start = model.register_forward_pre_hook(lambda module, inputs: clocks.lap("bookkeeping"))
    forward_end = model.register_forward_hook(lambda module, inputs, output: clocks.lap("forward"))
    trainer.optimizer.register_step_pre_hook(lambda opt, a, k: clocks.lap("backward"))
    trainer.optimizer.register_step_post_hook(lambda opt, a, k: clocks.lap("optimizer step"))
    trainer.scheduler.step = timed(clocks, "schedule", trainer.scheduler.step)
    loss_fn = timed(clocks, "loss", trainer.train_loss)
    ema = timed(clocks, "weight average", trainer.ema.update) if trainer.ema is not None else None
    mixer = TimedMixer(trainer.mixer, clocks) if trainer.mixer.enabled else None
    preprocess = timed(clocks, "preprocess", data.preprocess)

    def epoch(number: int) -> float:
        start = time.perf_counter()
        clocks.mark = start
        step = OptimizerStep(trainer.optimizer, trainer.scheduler, accumulate=tc.accumulate, grad_clip=tc.grad_clip,
                             after_step=[ema] if ema is not None else [])
        train_one_epoch(model, TimedBatches(train, clocks), preprocess=preprocess, step=step, loss_fn=loss_fn,
                        batch_size=tc.batch_size, generator=torch.Generator().manual_seed(number), epoch=number,
                        amp=trainer.amp, channels_last=data.channels_last, mixer=mixer)
        clocks.lap("bookkeeping")
        return time.perf_counter() - start

    epoch(1)  # warm-up: oneDNN's kernels are chosen, memory is mapped
    clocks.on = True
    train_s = epoch(2)
    clocks.on = False
    forward_start.remove()
    forward_end.remove()
    val_s = []
    for _ in range(3):
        start = time.perf_counter()
        evaluate(trainer.eval_module(data), data.val, preprocess=data.preprocess, loss_fn=trainer.eval_loss,
                 batch_size=tc.eval_batch_size, num_classes=trainer.splits.num_classes, amp=trainer.amp,
                 channels_last=data.channels_last,
                 tta=trainer.tta_for(data))
        val_s.append(time.perf_counter() - start)
    steps = num_batches(len(train), tc.batch_size)
    per_step = {part: seconds / steps for part, seconds in clocks.totals.items()}
    full_steps = trainer.steps_per_epoch
    epoch_s = sum(per_step.values()) * full_steps + statistics.median(val_s)
    print(f"{args.preset}: {steps} steps of {tc.batch_size} timed ({train_s:.1f} s), "
          f"{full_steps} steps an epoch, {torch.get_num_threads()} threads, {trainer.amp}")
    print(f"{'part':<18} {'ms a step':>10} {'s an epoch':>11} {'share':>7}")
    rows = sorted(per_step.items(), key=lambda kv: -kv[1]) + [("validation", statistics.median(val_s) / full_steps)]
    for part, seconds in rows:
        print(f"{part:<18} {1000 * seconds:>10.1f} {seconds * full_steps:>11.2f} {100 * seconds * full_steps / epoch_s:>6.1f}%")
    print(f"{'an epoch':<18} {'':>10} {epoch_s:>11.2f}")
    # the convolutions' pace: a forward pass is 2 FLOP a multiply-add; the backward does twice
    # the forward's work (the gradients of the inputs and of the weights)
    flop = 2 * macs_per_image(trainer.model, splits.input_size) * tc.batch_size
    pace = {"forward_gflop_s": flop / per_step["forward"] / 1e9, "backward_gflop_s": 2 * flop / per_step["backward"] / 1e9}
    print(f"forward {pace['forward_gflop_s']:.0f} GFLOP/s, backward {pace['backward_gflop_s']:.0f} GFLOP/s "
          f"({flop / 2 / tc.batch_size / 1e6:.0f} M multiply-adds an image)")
    case = " ".join([args.preset, *args.set, *([f"--phase {args.phase}"] if args.phase else [])])
    previous = RESULTS / "epoch_parts.json"
    cases = json.loads(previous.read_text())["cases"] if previous.is_file() else {}
    cases[case] = {"preset": args.preset, "overrides": overrides, "timed_steps": steps, "batch_size": tc.batch_size,
                   "steps_per_epoch": full_steps, "threads": torch.get_num_threads(),
                   "precision": trainer.amp, "seconds_per_step": per_step,
                   "validation_s": val_s, "estimated_epoch_s": epoch_s, "macs_per_image": flop // 2 // tc.batch_size,
                   **pace}
    path = write_json("epoch_parts", {"cases": cases})  # one case per preset and overrides, the others kept
    print(f"written {path}")


if __name__ == "__main__":
    main()
