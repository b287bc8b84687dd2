"""Does keeping weight decay off norms and biases help `cifar_recipe`? Judged on validation only.

    python benchmarks/decay_groups.py [--seeds 1] [--out runs/decay_groups]

Trains the preset as it is (`train.optimizer.decay_norm_and_bias: true`, every parameter decayed, as
Keras does) and with the decay kept off BatchNorm weights and biases (`false`, as nanoGPT and timm do),
on ../shared/data/cifar100-subset25, each seed of both at once: one process per configuration, one
thread each (`train.threads=1`), so the two share the machine evenly and compute what they would alone.
The decision reads the validation split only (final and best validation accuracy, final validation
loss); the test figures are printed beside them but choose nothing. A CPU without native bf16 trains
in fp32 (1 seed is what a session affords: say so); with native bf16, 3 seeds.
Writes results/decay_groups.json and prints a table.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import SHARED_DATA, write_json

CASES = {"decay everything (preset)": "true", "no decay on norms and biases": "false"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--out", default="runs/decay_groups")
    args = ap.parse_args()
    start = time.perf_counter()
    processes = {}
    for label, flag in CASES.items():
        out = Path(args.out) / f"decay_norm_and_bias-{flag}"
        command = [sys.executable, "-m", "cnnlab", "run", "cifar_recipe", "--data", str(SHARED_DATA / "cifar100-subset25"),
                   "--seeds", *map(str, args.seeds), "--seeds-together", "off", "--out", str(out), "--no-progress",
                   "--set", "train.threads=1", f"train.optimizer.decay_norm_and_bias={flag}"]
        processes[label] = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out)
    rows = {}
    for label, (process, out) in processes.items():
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"{label}: failed\n{err[-2000:]}")
        (folder,) = sorted((out / "cifar_recipe").iterdir())[-1:]
        runs = []
        for seed in args.seeds:
            results = json.loads((folder / f"seed-{seed}" / "results.json").read_text())
            with open(folder / f"seed-{seed}" / "metrics.csv") as handle:
                curve = [float(r["val_acc"]) for r in csv.DictReader(handle)]
            runs.append({"seed": seed, "final_val_acc": results["final_val_acc"], "best_val_acc": max(curve),
                         "final_val_loss": results["final_val_loss"], "test_acc": results["test_acc"],
                         "precision": results["precision"], "wall_time_s": results["wall_time_s"],
                         "val_acc_curve": curve, "folder": str(folder)})
        rows[label] = runs
    print(f"{'cifar_recipe':<32} {'final val acc':>14} {'best val acc':>13} {'final val loss':>15} {'test acc':>9}")
    for label, runs in rows.items():
        mean = lambda key: statistics.mean(r[key] for r in runs)  # noqa: E731
        print(f"{label:<32} {100 * mean('final_val_acc'):>13.2f}% {100 * mean('best_val_acc'):>12.2f}% "
              f"{mean('final_val_loss'):>15.4f} {100 * mean('test_acc'):>8.2f}%")
    path = write_json("decay_groups", {"seeds": args.seeds, "wall_s": time.perf_counter() - start, "cases": rows})
    print(f"written {path}")


if __name__ == "__main__":
    main()
