"""Where a short run's time goes: the command line, the imports, a 1-epoch BaseNet, torch.compile on the CPU.

    python benchmarks/fixed_costs.py [--repeats 3] [--compile-epochs 3]

Every figure is a whole process, timed from start to exit, one after the other (run it with
nothing else on the machine; medians of --repeats):

1. `cnnlab --help` and `cnnlab list` (issue 11: well under a second; they import no torch);
2. the imports a training run cannot avoid: torch; torch._dynamo, which torch.optim imports at
   the first optimizer it builds (`torch._disable_dynamo` on `add_param_group`) and in every
   `step()` (`_use_grad_for_differentiable`) even when nothing is compiled; matplotlib;
   scikit-learn's model_selection;
3. `cnnlab run basenet --epochs 1 --seeds 1` on cifar100-subset25: with an empty cache (the split
   is drawn by scikit-learn) and again (the split read back from the cache, scikit-learn not
   imported) — everything a run writes included (weights, curves, confusion, top losses, report);
4. `--set train.compile=true` against eager, BaseNet for --compile-epochs epochs, whole process
   and median epoch: whether torch.compile pays for itself on this CPU.

Prints a table and writes results/fixed_costs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import SHARED_DATA, wall, write_json


def median_wall(command: list[str], repeats: int, env: dict | None = None) -> float:
    return statistics.median(wall(command, env) for _ in range(repeats))


def python_import(statement: str, repeats: int) -> float:
    return median_wall([sys.executable, "-c", statement], repeats)


def run_basenet(data: str, out: str, epochs: int, env: dict, extra: list[str] = ()) -> tuple[float, dict]:
    seconds = wall([sys.executable, "-m", "cnnlab", "run", "basenet", "--data", data, "--epochs", str(epochs),
                    "--seeds", "1", "--device", "cpu", "--out", out, "--no-progress", *extra], env)
    newest = max((Path(out) / "basenet").iterdir(), key=lambda p: p.stat().st_mtime)
    return seconds, json.loads((newest / "seed-1" / "results.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA / "cifar100-subset25"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile-epochs", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, float] = {}
    cli = [sys.executable, "-m", "cnnlab"]
    rows["cnnlab --help"] = median_wall([*cli, "--help"], args.repeats)
    rows["cnnlab list"] = median_wall([*cli, "list"], args.repeats)
    rows["python -c 'import torch'"] = python_import("import torch", args.repeats)
    rows["import torch, torch._dynamo"] = python_import("import torch, torch._dynamo", args.repeats)
    rows["import matplotlib.pyplot"] = python_import("import matplotlib; matplotlib.use('Agg'); "
                                                     "import matplotlib.pyplot", args.repeats)
    rows["import sklearn.model_selection"] = python_import("import sklearn.model_selection", args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CNNLAB_CACHE": str(Path(tmp) / "cache")}
        out = str(Path(tmp) / "runs")
        rows["run basenet, 1 epoch, empty cache"], first = run_basenet(args.data, out, 1, env)
        warm = [run_basenet(args.data, out, 1, env) for _ in range(args.repeats)]
        rows["run basenet, 1 epoch, split cached"] = statistics.median(s for s, _ in warm)
        rows["  of which the epoch (train + validation)"] = statistics.median(r["median_epoch_time_s"] for _, r in warm)
        eager_s, eager = run_basenet(args.data, out, args.compile_epochs, env)
        compiled_s, compiled = run_basenet(args.data, out, args.compile_epochs, env, ["--set", "train.compile=true"])
    e = args.compile_epochs
    rows[f"run basenet, {e} epochs, eager"] = eager_s
    rows[f"run basenet, {e} epochs, train.compile=true"] = compiled_s
    rows["  median epoch, eager"] = eager["median_epoch_time_s"]
    rows["  median epoch, compiled"] = compiled["median_epoch_time_s"]
    width = max(len(k) for k in rows)
    print(f"\n{'whole process (median of %d where repeated)' % args.repeats:<{width}}  seconds")
    for name, seconds in rows.items():
        print(f"{name:<{width}}  {seconds:7.2f}")
    payload = {"seconds": rows, "repeats": args.repeats, "first_run_test_acc": first["test_acc"]}
    print(f"written {write_json('fixed_costs', payload)}")


if __name__ == "__main__":
    main()
