"""Behaviour preserved, bit for bit: four short runs on the real data, recorded before and after a redesign.

    python benchmarks/learner_equivalence.py record before   # on the commit before the change
    python benchmarks/learner_equivalence.py record after    # on the changed code
    python benchmarks/learner_equivalence.py compare         # every metrics.csv row and test figure

Each run goes through the command line (the one interface both versions share), fp32
($CNNLAB_CPU_BF16=0), one seed, two threads, no seeds trained together. Recorded: every
`metrics.csv` row without its wall time, and the test figures of `results.json`. `compare`
prints a table and writes `results/learner_equivalence.json`; it exits 1 on any difference.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, SHARED_DATA, write_json

CIFAR = str(SHARED_DATA / "cifar100-subset25")
BIRDS = str(SHARED_DATA / "birds-subset50")
COMMON = ["--seeds", "1", "--no-progress", "--device", "cpu", "--set", "train.threads=2", "seeds_together=off"]
RUNS = {
    "basenet (2 epochs)": ["basenet", "--data", CIFAR, "--epochs", "2"],
    "basenet_pp, augmentation (1 epoch)": ["basenet_pp", "--data", CIFAR, "--epochs", "1"],
    "birdnet_v4 on Lite0 (1 + 1 epochs)": ["birdnet_v4", "--data", BIRDS, "--backbone", "efficientnet_lite0",
                                           "--set", "train.phases.0.epochs=1", "train.phases.1.epochs=1"],
    "birdnet_recipe on Lite0 (2 + 1 epochs)": ["birdnet_recipe", "--data", BIRDS, "--backbone", "efficientnet_lite0",
                                               "--set", "train.phases.0.epochs=2", "train.phases.1.epochs=1"],
}
WALL_TIMES = {"epoch_time_s"}
TEST_FIGURES = ("test_loss", "test_acc", "test_bal_acc", "test_macro_f1", "final_val_loss", "final_val_acc",
                "kept_epoch", "epochs_trained", "num_train", "num_val", "num_test", "precision", "engine")


def _run(name: str, args: list[str], out: Path) -> dict:
    env = {**os.environ, "CNNLAB_CPU_BF16": "0"}
    command = [sys.executable, "-m", "cnnlab", "run", *args, "--out", str(out), *COMMON]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{name}: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    seed_dir = next(out.rglob("seed-1"))
    with open(seed_dir / "metrics.csv", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k not in WALL_TIMES} for row in csv.DictReader(handle)]
    results = json.loads((seed_dir / "results.json").read_text())
    return {"metrics": rows, "test": {k: results.get(k) for k in TEST_FIGURES}}


def record(label: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, args) in enumerate(RUNS.items()):
            print(f"{label}: {name} ...", flush=True)
            runs[name] = _run(name, args, Path(tmp) / str(index))
    path = write_json(f"learner_equivalence_{label}", {"commit": commit, "src_changed": dirty, "runs": runs})
    print(f"recorded {path}")


def compare() -> int:
    before = json.loads((RESULTS / "learner_equivalence_before.json").read_text())
    after = json.loads((RESULTS / "learner_equivalence_after.json").read_text())
    table, same_all = [], True
    for name in RUNS:
        a, b = before["runs"][name], after["runs"][name]
        rows_same = a["metrics"] == b["metrics"]
        test_same = a["test"] == b["test"]
        same_all &= rows_same and test_same
        table.append({"run": name, "metrics rows": len(a["metrics"]), "rows identical": rows_same,
                      "test figures identical": test_same, "test_acc": b["test"]["test_acc"]})
    print(f"{'run':40} {'rows':>4}  rows identical  test identical  test acc")
    for row in table:
        print(f"{row['run']:40} {row['metrics rows']:>4}  {str(row['rows identical']):>14}  "
              f"{str(row['test figures identical']):>14}  {100 * row['test_acc']:.2f} %")
    write_json("learner_equivalence", {"before_commit": before["commit"], "after_commit": after["commit"],
                                       "identical": same_all, "runs": table})
    print("identical" if same_all else "DIFFERENT")
    return 0 if same_all else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["record"] and len(sys.argv) == 3:
        record(sys.argv[2])
    elif sys.argv[1:] == ["compare"]:
        sys.exit(compare())
    else:
        sys.exit(__doc__)
