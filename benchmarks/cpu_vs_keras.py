"""cnnlab against the lab's own Keras recipe on the same CPU, data and seeds: whole-process wall times.

    python benchmarks/cpu_vs_keras.py [--keras-python .venv-keras/bin/python] [--only basenet|basenet_pp]

The Keras side is benchmarks/keras_lab_baseline.py in its own virtual environment (TensorFlow
is not a cnnlab dependency; see that file for the two setup commands). Each side runs as a
user runs it — one process for the three seeds, timed from start to exit — one after the other,
never at once:

1. BaseNet, seeds 1-3, 50 epochs, all 11,250 training images (issue 11 target: ≥ 3× faster).
2. BaseNet++ with augmentation, seeds 1-3, on 1,800 training images (cnnlab: data.subset=2000,
   which holds out 200 of them for validation; Keras: the first 1,800 of its training split),
   --pp-epochs epochs (target: ≥ 2× in cnnlab's CPU default).

Prints a table (wall times, ratio, mean test accuracy of both) and writes results/cpu_vs_keras.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, SHARED_DATA, wall, write_json

HERE = Path(__file__).resolve().parent


def keras_side(python: str, data: str, model: str, epochs: int, extra: list[str]) -> dict:
    name = f"keras_{model}{'_aug' if '--augment' in extra else ''}" + \
        (f"_n{extra[extra.index('--train-limit') + 1]}" if "--train-limit" in extra else "")
    seconds = wall([python, str(HERE / "keras_lab_baseline.py"), "--model", model, "--epochs", str(epochs),
                    "--seeds", "1", "2", "3", "--data", data, *extra])
    runs = json.loads((HERE / "results" / f"{name}.json").read_text())["runs"]
    return {"wall_s": seconds, "test_acc": [r["test_acc"] for r in runs],
            "median_epoch_s": statistics.median(r["median_epoch_time_s"] for r in runs)}


def cnnlab_side(data: str, preset: str, epochs: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        seconds = wall([sys.executable, "-m", "cnnlab", "run", preset, "--data", data, "--epochs", str(epochs),
                        "--seeds", "1", "2", "3", "--device", "cpu", "--out", out,
                        "--no-progress", *extra])
        (folder,) = (Path(out) / preset).iterdir()
        runs = json.loads((folder / "summary.json").read_text())["runs"]
    return {"wall_s": seconds, "test_acc": [r["test_acc"] for r in runs],
            "median_epoch_s": statistics.median(r["median_epoch_time_s"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras-python", default=str(ROOT / ".venv-keras" / "bin" / "python"))
    ap.add_argument("--data", default=str(SHARED_DATA / "cifar100-subset25"))
    ap.add_argument("--epochs", type=int, default=50, help="BaseNet epochs")
    ap.add_argument("--pp-epochs", type=int, default=3, help="BaseNet++ epochs")
    ap.add_argument("--only", choices=("basenet", "basenet_pp"))
    args = ap.parse_args()
    if not Path(args.keras_python).exists():
        ap.error(f"{args.keras_python}: no Python with Keras there; see benchmarks/keras_lab_baseline.py")
    cases = {"basenet": ("basenet", args.epochs, [], []),
             "basenet_pp": ("basenet_pp", args.pp_epochs, ["--augment", "--train-limit", "1800"],
                            ["--set", "data.subset=2000"])}
    results = {}
    for name, (model, epochs, keras_extra, cnnlab_extra) in cases.items():
        if args.only and name != args.only:
            continue
        keras = keras_side(args.keras_python, args.data, model, epochs, keras_extra)
        print(f"{name}: Keras {keras['wall_s']:.1f} s", flush=True)
        ours = cnnlab_side(args.data, model, epochs, cnnlab_extra)
        print(f"{name}: cnnlab {ours['wall_s']:.1f} s", flush=True)
        results[name] = {"epochs": epochs, "keras": keras, "cnnlab": ours, "speedup": keras["wall_s"] / ours["wall_s"],
                         "date": time.strftime("%Y-%m-%d %H:%M")}
    targets = {"basenet": 3.0, "basenet_pp": 2.0}
    print(f"\n{'3 seeds, whole process':<28} {'epochs':>6} {'Keras (s)':>10} {'cnnlab (s)':>11} {'speed-up':>9} "
          f"{'target':>7}  mean test accuracy Keras / cnnlab")
    for name, row in results.items():
        accs = " / ".join(f"{100 * statistics.fmean(row[side]['test_acc']):.2f} %" for side in ("keras", "cnnlab"))
        print(f"{name:<28} {row['epochs']:>6} {row['keras']['wall_s']:>10.1f} {row['cnnlab']['wall_s']:>11.1f} "
              f"{row['speedup']:>8.2f}x {targets[name]:>6.0f}x  {accs}")
        row["target"] = targets[name]
        row["meets_target"] = row["speedup"] >= targets[name]
    # --only re-measures one case: the other keeps its earlier figures (each case has its date).
    previous = HERE / "results" / "cpu_vs_keras.json"
    kept = {}
    if args.only and previous.exists():
        earlier = json.loads(previous.read_text())
        kept = {name: {"date": earlier["machine"]["date"], **row} for name, row in earlier.get("cases", {}).items()}
    print(f"written {write_json('cpu_vs_keras', {'cases': {**kept, **results}})}")


if __name__ == "__main__":
    main()
