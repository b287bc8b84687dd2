"""Faults on real data: a run killed five times and resumed, and two runs at once on one cold cache.

    python benchmarks/faults.py [--probe-epochs 3] [--tune-epochs 1] [--seed 28]

1. Repeated kills. birdnet_recipe (a linear probe on cached Lite0 features, then the whole network
   fine-tuned) on ../shared/data/birds-subset50 with EfficientNet-Lite0's real ImageNet weights,
   3 seeds trained together, once uninterrupted, then again killed with SIGKILL (the whole process
   group, cnnlab/failpoints.py) at five moments drawn with `--seed` — while the split memo is
   written, while the feature cache is written, at a checkpoint write of the probe, as the
   fine-tuning phase starts, at a checkpoint write of the fine-tune — each time run again (no
   folder yet) or resumed, then resumed to the end. Figures: kills survived, whether every seed's
   metrics.csv, model.safetensors and results.json equal the uninterrupted run's, and the time the
   kills cost (all attempts' wall time less the uninterrupted run's).
2. Concurrency. Two `cnnlab run birdnet_v0` (3 seeds, the probe on cached features) started at once
   with one cold feature cache and split memo: both finish, their figures are equal, the cache holds
   one entry per split, and the wall time of the pair against one run alone.
Writes results/faults.json and prints a table.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open

from _common import SHARED_DATA, write_json

BIRDS = SHARED_DATA / "birds-subset50"


def cnnlab(args: list, env: dict) -> tuple[int, float, str]:
    """Exit code (-9: killed), wall seconds, stderr's end; a session of its own, so a kill takes only it."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, start_new_session=True)
    return done.returncode, time.perf_counter() - start, done.stderr[-1500:]


def environment(cache: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNLAB_FAILPOINT")}
    return {**env, "CNNLAB_CACHE": str(cache), **extra}


def same_outcome(a: Path, b: Path) -> dict:
    def rows(folder: Path) -> list[dict]:
        with open(folder / "metrics.csv") as handle:
            return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in csv.DictReader(handle)]

    def weights(folder: Path) -> tuple[dict, dict]:
        # tensors and metadata, not the file's bytes: safetensors writes its metadata map in no fixed order
        with safe_open(str(folder / "model.safetensors"), "pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()

    ra, rb = (json.loads((f / "results.json").read_text()) for f in (a, b))
    (ta, ma), (tb, mb) = weights(a), weights(b)
    keys = ("test_loss", "test_acc", "test_bal_acc", "test_macro_f1", "final_val_loss")
    return {"metrics": rows(a) == rows(b),
            "weights": ma == mb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta),
            "results": all(ra[k] == rb[k] for k in keys), "test_acc": [ra["test_acc"], rb["test_acc"]]}


def repeated_kills(work: Path, probe: int, tune: int, seed: int) -> dict:
    run = ["run", "birdnet_recipe", "--data", BIRDS, "--backbone", "efficientnet_lite0", "--seeds", 1, 2, 3,
           "--seeds-together", "on", "--no-progress", "--set", f"train.phases.0.epochs={probe}",
           f"train.phases.1.epochs={tune}"]
    code, clean_s, err = cnnlab([*run, "--out", work / "clean"], environment(work / "clean-cache"))
    if code:
        raise SystemExit(f"the uninterrupted run failed: {err}")
    (reference,) = (work / "clean" / "birdnet_recipe").iterdir()
    rng = random.Random(seed)
    # the third seed's probe may still be ahead when the others start the fine-tune: the last kill's
    # checkpoint write is drawn among the fine-tune's own writes (3 seeds × its epochs)
    moments = ["write splits/*@1", f"write features/*@{rng.randint(1, 3)}",
               f"write seed-*/checkpoint.pt@{rng.randint(1, 3 * probe - 1)}",
               f"seed * phase 1 start@{rng.randint(1, 3)}",
               f"write seed-*/checkpoint.pt@{rng.randint(1, 3 * tune)}"]
    out, cache, attempts = work / "killed", work / "killed-cache", []
    for index, moment in enumerate(moments):
        found = sorted((out / "birdnet_recipe").iterdir()) if (out / "birdnet_recipe").exists() else []
        command = ["resume", found[0], "--no-progress"] if found else [*run, "--out", out]
        code, seconds, err = cnnlab(command, environment(cache, CNNLAB_FAILPOINT=moment,
                                                         CNNLAB_FAILPOINT_COUNT=str(work / f"hits-{index}")))
        attempts.append({"moment": moment, "command": command[0], "exit": code, "seconds": seconds})
        print(f"  {moment:<34} {command[0]:<7} exit {code:>3} after {seconds:6.1f} s", flush=True)
    (folder,) = (out / "birdnet_recipe").iterdir()
    code, seconds, err = cnnlab(["resume", folder, "--no-progress"], environment(cache))
    attempts.append({"moment": None, "command": "resume", "exit": code, "seconds": seconds})
    if code:
        raise SystemExit(f"the last resume failed: {err}")
    seeds = {s: same_outcome(reference / s, folder / s) for s in ("seed-1", "seed-2", "seed-3")}
    spent = sum(a["seconds"] for a in attempts)
    return {"recipe": {"phases": [probe, tune], "seeds": 3, "backbone": "efficientnet_lite0 (ImageNet)"},
            "kills": sum(a["exit"] == -9 for a in attempts), "attempts": attempts, "seeds_identical": seeds,
            "all_identical": all(all(v for k, v in s.items() if k != "test_acc") for s in seeds.values()),
            "uninterrupted_s": clean_s, "killed_and_resumed_s": spent, "time_lost_s": spent - clean_s}


def concurrent_runs(work: Path) -> dict:
    run = ["run", "birdnet_v0", "--data", BIRDS, "--backbone", "efficientnet_lite0", "--seeds", 1, 2, 3,
           "--no-progress"]
    code, alone_s, err = cnnlab([*run, "--out", work / "alone"], environment(work / "alone-cache"))
    if code:
        raise SystemExit(f"the single run failed: {err}")
    env = environment(work / "shared-cache")
    start = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, [*run, "--out", work / "pair"])],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    outputs = [p.communicate() for p in processes]
    pair_s = time.perf_counter() - start
    folders = sorted((work / "pair" / "birdnet_v0").iterdir())
    entries = list((work / "shared-cache" / "features").glob("*.safetensors"))
    return {"exit_codes": [p.returncode for p in processes], "folders": len(folders),
            "identical": all(all(v for k, v in same_outcome(folders[0] / s, folders[1] / s).items() if k != "test_acc")
                             for s in ("seed-1", "seed-2", "seed-3")) if len(folders) == 2 else False,
            "feature_entries": len(entries), "half_files": len(list((work / "shared-cache").rglob(".*.tmp"))),
            "waited_for_the_other": sum("another run is computing" in out for out, _ in outputs),
            "one_run_alone_s": alone_s, "two_at_once_s": pair_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe-epochs", type=int, default=3)
    ap.add_argument("--tune-epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=28, help="draws the kill moments (default 28)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnlab-faults-"))
    try:
        print("repeated kills (birdnet_recipe, Lite0, 3 seeds together):", flush=True)
        kills = repeated_kills(work, args.probe_epochs, args.tune_epochs, args.seed)
        print("two runs at once on one cold cache (birdnet_v0, Lite0, 3 seeds):", flush=True)
        pair = concurrent_runs(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'scenario':<44} {'figure':>30}")
    print(f"{'kills survived':<44} {kills['kills']:>30}")
    print(f"{'metrics, weights, results identical':<44} {str(kills['all_identical']):>30}")
    print(f"{'uninterrupted / killed 5x + resumed (s)':<44} "
          f"{kills['uninterrupted_s']:>14.1f} / {kills['killed_and_resumed_s']:<13.1f}")
    print(f"{'time lost to the kills (s)':<44} {kills['time_lost_s']:>30.1f}")
    print(f"{'two runs at once: exit codes':<44} {str(pair['exit_codes']):>30}")
    print(f"{'two runs at once: identical, entries':<44} {str(pair['identical']) + ', ' + str(pair['feature_entries']):>30}")
    print(f"{'one run alone / two at once (s)':<44} {pair['one_run_alone_s']:>14.1f} / {pair['two_at_once_s']:<13.1f}")
    path = write_json("faults", {"repeated_kills": kills, "concurrent_runs": pair})
    print(f"written {path}")


if __name__ == "__main__":
    main()
