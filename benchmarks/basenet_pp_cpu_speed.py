"""Benchmark: seconds per epoch of BaseNet++ with augmentation on the CPU, cnnlab vs the lab's Keras.

Both train on the same 1,800 training images of ../shared/data/cifar100-subset25 (batch 64,
validation on the 10 % hold-out included), one after the other in this one run, so the
ratio is measured under the same conditions. The Keras side needs a separate virtual
environment with TensorFlow (see keras_lab_baseline.py); without --keras-python only
cnnlab is timed.

    python benchmarks/basenet_pp_cpu_speed.py --keras-python .venv-keras/bin/python [--epochs 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import RESULTS, SHARED_DATA, write_json

from cnnlab.config import load_experiment
from cnnlab.fileio import read_json
from cnnlab.reporting.tables import render_table
from cnnlab.studies import run_experiment

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-images", type=int, default=1800)
    ap.add_argument("--keras-python", help="python of a virtual environment with TensorFlow/Keras")
    ap.add_argument("--data", default=str(SHARED_DATA / "cifar100-subset25"))
    args = ap.parse_args()
    # data.subset keeps N/0.9 images so that N remain for training after the 10 % hold-out.
    subset = round(args.train_images / 0.9)
    variants = {"cnnlab fp32": {"train.channels_last": False, "train.amp": "off"},
                "cnnlab fp32 channels-last": {"train.channels_last": True, "train.amp": "off"},
                "cnnlab bf16 channels-last": {"train.channels_last": True, "train.amp": "bf16"}}
    rows, medians = [], {}
    from cnnlab.reporting.metrics import read_metrics
    for label, settings in variants.items():
        with tempfile.TemporaryDirectory() as out:
            cfg = load_experiment("basenet_pp", overrides={
                "data.path": args.data, "data.subset": subset, "train.epochs": args.epochs, "seeds": [1],
                "device": "cpu", "out": out, **settings})
            group = run_experiment(cfg, progress=False, log=lambda s: None)
            run = read_json(group / "seed-1" / "results.json")
            times = [r["epoch_time_s"] for r in read_metrics(group / "seed-1" / "metrics.csv")]
        # The first epoch includes one-off warm-up (oneDNN kernel selection): median of the rest.
        medians[label] = statistics.median(times[1:] or times)
        rows.append([label, str(run["num_train"]), " ".join(f"{t:.1f}" for t in times), f"{medians[label]:.2f}"])
    keras_s = None
    if args.keras_python:
        subprocess.run([args.keras_python, str(HERE / "keras_lab_baseline.py"), "--model", "basenet_pp", "--augment",
                        "--epochs", str(args.epochs), "--seeds", "1", "--train-limit", str(args.train_images),
                        "--data", args.data], check=True)
        keras = json.loads((RESULTS / f"keras_basenet_pp_aug_n{args.train_images}.json").read_text())["runs"][0]
        keras_s = keras["median_epoch_time_s"]
        rows.append(["Keras (lab recipe)", str(args.train_images), " ".join(f"{t:.1f}" for t in keras["epoch_times_s"]),
                     f"{keras_s:.2f}"])
    print(render_table(["", "train images", "epoch times (s)", "median s/epoch (after the 1st)"], rows))
    speedups = {label: keras_s / m for label, m in medians.items()} if keras_s else {}
    for label, ratio in speedups.items():
        print(f"{label}: {ratio:.1f}x faster than the lab's Keras recipe (target: at least 2x)")
    path = write_json("basenet_pp_cpu_speed", {"epochs": args.epochs, "train_images": run["num_train"],
                                               "cnnlab_median_s": medians, "keras_median_s": keras_s,
                                               "speedup_vs_keras": speedups})
    print(f"written {path}")


if __name__ == "__main__":
    main()
