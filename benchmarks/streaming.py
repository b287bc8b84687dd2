"""Streaming photos: how fast images decode and resize, and whether a fine-tune ever waits on them.

    python benchmarks/streaming.py [--images 400] [--steps 12]

1. Decode + resize to 224×224, one process, images a second (median of 3 passes) on the birds'
   JPEGs as they are (227×227) and on the same photos enlarged to 1600×1200 (a camera's size):
   Pillow decoding every pixel then resizing; Pillow with `draft` (libjpeg's DCT scaling, what
   cnnlab's `load_rgb` does for a JPEG larger than needed); torchvision.io.decode_jpeg then an
   antialiased resize. Then cnnlab's StreamingSet through its DataLoader workers (cores - 1).
2. The real loop (training/loop.py) fine-tuning Lite0 on the streamed birds (birdnet_recipe's
   fine-tune phase: augmentation on, data.cache: false so every batch is decoded by the workers
   while the model trains), with epoch_parts.py's clocks: the share of each step spent waiting
   for the next batch ("batch") against the forward, backward and the rest.
Writes results/streaming.json and prints both tables.
"""
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import SHARED_DATA, write_json
from epoch_parts import Clocks, TimedBatches

from cnnlab.config import load_experiment
from cnnlab.data.streaming import StreamingSet, decode_image, default_workers
from cnnlab.studies.experiment import load_data
from cnnlab.training.loop import train_one_epoch
from cnnlab.training.steps import OptimizerStep
from cnnlab.training.learner import Learner

BIRDS = SHARED_DATA / "birds-subset50"
SIZE = 224


def _pil_full(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        image = image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())


def _cnnlab(path: Path) -> torch.Tensor:  # load_rgb with draft, as streaming decodes
    return decode_image(path, SIZE, "stretch")


def _torchvision(path: Path) -> torch.Tensor:
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2.functional import resize

    return resize(decode_jpeg(read_file(str(path))), [SIZE, SIZE], antialias=True)


def images_per_second(decode, paths: list[Path]) -> float:
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for path in paths:
            decode(path)
        rates.append(len(paths) / (time.perf_counter() - start))
    return statistics.median(rates)


def streamed_per_second(paths: list[Path], workers: int) -> float:
    data = StreamingSet(paths, torch.zeros(len(paths), dtype=torch.long), size=SIZE, num_workers=workers)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _batch in data.batches(32):
            pass
        rates.append(len(paths) / (time.perf_counter() - start))
    return statistics.median(rates)


def enlarged(paths: list[Path], folder: Path) -> list[Path]:
    """The photos at 1600×1200, quality 90: what a camera or phone gives."""
    out = []
    for index, path in enumerate(paths):
        target = folder / f"{index:04d}.jpg"
        with Image.open(path) as image:
            image.convert("RGB").resize((1600, 1200), Image.BICUBIC).save(target, quality=90)
        out.append(target)
    return out


def decode_table(count: int) -> dict:
    every = sorted(BIRDS.glob("*/*.jpg"))
    paths = every[:: max(1, len(every) // count)][:count]
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        large = enlarged(paths[: count // 4], Path(tmp))
        for label, files in (("227×227 (the birds as stored)", paths), ("1600×1200 (enlarged)", large)):
            row = {name: images_per_second(decode, files) for name, decode in
                   (("pillow_full_decode", _pil_full), ("pillow_draft (cnnlab)", _cnnlab),
                    ("torchvision_decode_jpeg", _torchvision))}
            row[f"cnnlab_streaming_{default_workers()}_workers"] = streamed_per_second(files, default_workers())
            row["images"] = len(files)
            figures[label] = row
    return figures


def loop_wait(steps: int) -> dict:
    cfg = load_experiment("birdnet_recipe", overrides={
        "data.path": str(BIRDS), "model_args.backbone": "efficientnet_lite0", "data.cache": False,
        "device": "cpu"})
    splits = load_data(cfg, log=lambda line: None)
    trainer = Learner(cfg, splits, seed=1, log=lambda line: None, progress=False)
    fine_tune = len(trainer.phases) - 1
    data, model = trainer.start_phase(fine_tune)
    tc = cfg.train
    train = data.train.subset(torch.arange(min(len(data.train), steps * tc.batch_size)))
    clocks = Clocks()
    model.register_forward_pre_hook(lambda module, inputs: clocks.lap("other"))
    model.register_forward_hook(lambda module, inputs, output: clocks.lap("forward"))
    trainer.optimizer.register_step_pre_hook(lambda opt, a, k: clocks.lap("backward"))
    trainer.optimizer.register_step_post_hook(lambda opt, a, k: clocks.lap("optimizer step"))

    def epoch(number: int) -> float:
        start = clocks.mark = time.perf_counter()
        step = OptimizerStep(trainer.optimizer, trainer.scheduler,
                             after_step=[trainer.ema.update] if trainer.ema is not None else [])
        train_one_epoch(model, TimedBatches(train, clocks), preprocess=data.preprocess, step=step,
                        loss_fn=trainer.train_loss, batch_size=tc.batch_size,
                        generator=torch.Generator().manual_seed(number), epoch=number, amp=trainer.amp,
                        channels_last=data.channels_last, mixer=None)
        clocks.lap("other")
        return time.perf_counter() - start

    epoch(1)  # warm-up
    clocks.on = True
    seconds = epoch(2)
    totals = dict(clocks.totals)
    totals["other"] = totals.pop("bookkeeping", 0.0) + totals.get("other", 0.0)
    whole = sum(totals.values())
    return {"steps": -(-len(train) // tc.batch_size), "batch_size": tc.batch_size, "seconds": seconds,
            "images_per_second": len(train) / seconds, "decoding_workers": train.num_workers,
            "torch_threads": torch.get_num_threads(), "precision": trainer.amp,
            "share": {part: value / whole for part, value in totals.items()},
            "wait_for_data_share": totals.get("batch", 0.0) / whole}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400, help="images decoded per pass (default 400)")
    ap.add_argument("--steps", type=int, default=12, help="fine-tuning steps timed (default 12, batch 32)")
    args = ap.parse_args()
    decode = decode_table(args.images)
    print(f"{'decode + resize to 224, img/s':<34}" + "".join(f"{k[:26]:>28}" for k in next(iter(decode.values()))))
    for label, row in decode.items():
        print(f"{label:<34}" + "".join(f"{v:>28.1f}" if isinstance(v, float) else f"{v:>28}" for v in row.values()))
    wait = loop_wait(args.steps)
    print(f"\nLite0 fine-tune, streamed birds ({wait['steps']} steps of {wait['batch_size']}, "
          f"{wait['decoding_workers']} decoding worker(s), {wait['torch_threads']} threads, {wait['precision']}): "
          f"{wait['images_per_second']:.1f} img/s trained")
    for part, share in sorted(wait["share"].items(), key=lambda kv: -kv[1]):
        print(f"  {part:<16} {100 * share:5.1f} %")
    path = write_json("streaming", {"decode": decode, "fine_tune": wait})
    print(f"written {path}")


if __name__ == "__main__":
    main()
