"""What keeping freed memory (training/allocator.py) is worth on this CPU: glibc's defaults against cnnlab's.

    python benchmarks/allocator.py [--steps 12] [--skip 4]

Each case runs in its own process (the allocator is set once per process), twice: with
CNNLAB_MALLOC=system (glibc's defaults: blocks above 32 MB from mmap, returned on free) and with
cnnlab's setting, one after the other, never at once. A case times `--steps` steps of real models
on random data and reports the median after `--skip` warm-up steps, with the kernel's share of the
CPU time (page faults on freshly mapped memory show up as system time):

- EfficientNet-Lite0 at 224 px, inference on 64 images (feature extraction, evaluation, predict);
- EfficientNet-Lite0 at 224 px, a training step on 32 images (the birds' fine-tuning);
- BaseNet++ and cifar_recipe at 32 px, a training step on the presets' batches (64, 128);
- BaseNet++, evaluation of 1,000 images (train.eval_batch_size: every epoch's validation, the test);
- BaseNet, a training step on 64 images.

Prints a table and writes results/allocator.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import RESULTS, write_json

CASES = {
    "lite0_inference_64": ("birdnet_v0", {"backbone": "efficientnet_lite0", "weights": "none"}, 50, 224, 64, False),
    "lite0_train_32": ("birdnet_v0", {"backbone": "efficientnet_lite0", "weights": "none"}, 50, 224, 32, True),
    "basenet_pp_train_64": ("basenet_pp", {}, 25, 32, 64, True),
    "basenet_pp_eval_1000": ("basenet_pp", {}, 25, 32, 1000, False),
    "cifar_recipe_train_128": ("cifar_recipe", {}, 25, 32, 128, True),
    "basenet_train_64": ("basenet", {}, 25, 32, 64, True),
}

# Run in a fresh interpreter: the model, then `steps` timed steps; prints one JSON line.
CHILD = r"""
import json, os, statistics, sys, time
import torch
from cnnlab.models import create_model
from cnnlab.training.allocator import keep_freed_memory
model_name, args, classes, size, batch, train, steps, skip = json.loads(sys.argv[1])
tuned = keep_freed_memory()
torch.manual_seed(0)
model = create_model(model_name, num_classes=classes, **args).to(memory_format=torch.channels_last)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, classes, (batch,))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
model.train(train)
times, system = [], []
for step in range(steps):
    start, before = time.perf_counter(), os.times()
    if train:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    else:
        with torch.no_grad():
            model(x)
    after = os.times()
    times.append(time.perf_counter() - start)
    system.append((after.system - before.system) / max(1e-9, (after.system + after.user) - (before.system + before.user)))
print(json.dumps({"tuned": tuned, "median_s": statistics.median(times[skip:]),
                  "system_share": statistics.median(system[skip:])}))
"""


def measure(case: tuple, steps: int, skip: int, system_malloc: bool) -> dict:
    env = dict(os.environ)
    env.pop("CNNLAB_MALLOC", None)
    if system_malloc:
        env["CNNLAB_MALLOC"] = "system"
    model, args, classes, size, batch, train = case
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps([model, args, classes, size, batch, train,
                                                                     steps, skip])],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip", type=int, default=4)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES))
    args = parser.parse_args()
    rows = {}
    print(f"{'case':<24} {'glibc s/step':>13} {'sys %':>6} {'cnnlab s/step':>14} {'sys %':>6} {'speed-up':>9}")
    for name in args.only or CASES:
        system = measure(CASES[name], args.steps, args.skip, system_malloc=True)
        tuned = measure(CASES[name], args.steps, args.skip, system_malloc=False)
        rows[name] = {"glibc_default": system, "keep_freed_memory": tuned,
                      "speedup": system["median_s"] / tuned["median_s"]}
        print(f"{name:<24} {system['median_s']:>13.3f} {100 * system['system_share']:>6.0f} "
              f"{tuned['median_s']:>14.3f} {100 * tuned['system_share']:>6.0f} {rows[name]['speedup']:>8.2f}x")
    previous = RESULTS / "allocator.json"
    if args.only and previous.is_file():  # re-measuring some cases keeps the others
        rows = {**json.loads(previous.read_text())["cases"], **rows}
    path = write_json("allocator", {"steps": args.steps, "skip": args.skip, "cases": rows})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
