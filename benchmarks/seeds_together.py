"""Seeds trained together, and two jobs sharing a machine: whole-process wall times, one invocation.

    python benchmarks/seeds_together.py --data ../shared/data/cifar100-subset25 [--epochs 10]

1. `cnnlab run basenet --seeds 1 2 3` three ways: one process with every core (--seeds-together
   off), one thread a run one after another, and together (--seeds-together on: one process a
   seed, the cores shared out, single-threaded workers up to two a core; the default for small
   models from 2 cores up).
2. Two `cnnlab run basenet --seeds 1` started at once, with every core each and passive waiting
   (the default), every core each with PyTorch's spinning (OMP_WAIT_POLICY=ACTIVE), and one
   thread each (--set train.threads=1): how much each slows the other.
Writes results/seeds_together.json and prints a table. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_json

from cnnlab.training.device import cpu_cores


def cnnlab(args: list[str], out: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "run", "basenet", *args, "--out", out, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def timed(args: list[str], out: str, env: dict | None = None) -> tuple[float, dict]:
    start = time.perf_counter()
    process = cnnlab(args, out, env)
    _, err = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(err)
    (folder,) = sorted((Path(out) / "basenet").iterdir())[-1:]
    return wall, json.loads((folder / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="repeat each measurement; the median is kept")
    ap.add_argument("--only", choices=("three_seeds", "two_jobs"), help="measure one part only")
    args = ap.parse_args()
    common = ["--data", args.data, "--epochs", str(args.epochs), "--device", "cpu"]
    cores = cpu_cores()
    ways = {"one process, every core": ["--seeds-together", "off", "--set", f"train.threads={cores}"],
            "one thread a run, one after another": ["--seeds-together", "off", "--set", "train.threads=1"],
            "together": ["--seeds-together", "on"]}
    payload = {"epochs": args.epochs, "cores": cores, "seeds": [1, 2, 3], "three_seeds": {}, "two_jobs": {}}
    with tempfile.TemporaryDirectory() as out:
        for name, extra in ways.items() if args.only != "two_jobs" else ():
            walls, accs = [], None
            for _ in range(args.repeats):
                wall, summary = timed([*common, "--seeds", "1", "2", "3", *extra], out)
                walls.append(wall)
                accs = [r["test_acc"] for r in summary["runs"]]
            payload["three_seeds"][name] = {"wall_s": statistics.median(walls), "test_acc": accs}
            print(f"{name}: {statistics.median(walls):.1f} s, test accuracy {accs}", flush=True)
        # cnnlab's default waits passively (OMP_WAIT_POLICY=PASSIVE); ACTIVE is PyTorch's own spinning.
        for threads, policy in ((cores, "PASSIVE"), (cores, "ACTIVE"), (1, "PASSIVE")) if args.only != "three_seeds" \
                else ():
            env = {"OMP_WAIT_POLICY": policy}
            run = [*common, "--seeds", "1", "--set", f"train.threads={threads}"]
            alone = statistics.median(timed(run, out, env)[0] for _ in range(args.repeats))
            start = time.perf_counter()
            jobs = [cnnlab(run, out, env) for _ in range(2)]
            for job in jobs:
                job.communicate()
            together = time.perf_counter() - start
            name = f"{threads} thread(s) each, {policy.lower()} waiting"
            payload["two_jobs"][name] = {"alone_s": alone, "two_at_once_s": together, "slowdown": together / alone}
            print(f"two jobs, {name}: alone {alone:.1f} s, both at once {together:.1f} s", flush=True)
    before = payload["three_seeds"].get("one process, every core", {}).get("wall_s")
    print(f"\nBaseNet, 3 seeds x {args.epochs} epochs, whole process ({cores} cores)")
    print(f"{'way':<40} {'wall (s)':>9} {'speed-up':>9}  test accuracy of seeds 1, 2, 3")
    for name, row in payload["three_seeds"].items():
        accs = ", ".join(f"{100 * a:.2f}" for a in row["test_acc"])
        print(f"{name:<40} {row['wall_s']:>9.1f} {before / row['wall_s']:>8.2f}x  {accs}")
    print("\nTwo BaseNet runs at once: wall of both / wall of one alone")
    for name, row in payload["two_jobs"].items():
        print(f"{name:<40} {row['slowdown']:>8.2f}x  (alone {row['alone_s']:.1f} s, both {row['two_at_once_s']:.1f} s)")
    name = "seeds_together" if args.only is None else f"seeds_together_{args.only}"
    print(f"written {write_json(name, payload)}")


if __name__ == "__main__":
    main()
