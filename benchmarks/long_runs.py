"""The lab's long runs, recorded: finished (or partly finished) experiment folders → results/long_runs.json.

A run at its preset length does not fit a test or one shell command on a CPU: start it in the
background, one at a time so timings stay honest, and finish it with `cnnlab resume` if the
session ends first; then record it here:

    nohup cnnlab run birdnet_v4 --backbone efficientnet_lite0 --data ../shared/data/birds-subset50 \\
        --seeds 1 --out ../longruns > v4.log 2>&1 &
    python benchmarks/long_runs.py ../longruns/birdnet_v4/<stamp> [FOLDER ...]

Each folder's finished seeds (test accuracy and loss, final validation accuracy, epochs, median
epoch time, wall time, device) are stored under the experiment's name and backbone, replacing
an earlier record of the same key; the other records stay. With --merge, a folder adds its seeds
to the earlier record instead (a seed trained in a later session, `cnnlab run ... --seeds 3`):
the earlier seeds it does not have stay, and a folder of another recipe is refused, the keys
that differ named (benchmarks/_records.py). Prints a table of every record.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _common import RESULTS, machine
from _records import experiment_record, merge_records, named_with_precision

OUT = RESULTS / "long_runs.json"


def record(folder: Path) -> tuple[str, dict]:
    """(key, record) of one experiment folder: the experiment's name, its backbone if it has one, and its
    precision unless fp32 ("basenet_pp in bf16"): the protocol leaves precision out, the record must not."""
    cfg, value = experiment_record(folder)
    backbone = cfg.model_args.get("backbone")
    key = named_with_precision(f"{cfg.experiment_name} ({backbone})" if backbone else cfg.experiment_name, value)
    return key, {**value, "machine": machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="experiment folders (cnnlab run's output)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--merge", action="store_true", help="add the folders' seeds to the records of the same key")
    args = ap.parse_args()
    records = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for folder in args.folders:
        key, value = record(folder)
        records[key] = merge_records(records[key], value) if args.merge and key in records else value
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=2) + "\n")
    print(f"{'experiment':<36} {'epochs':>6}  {'test accuracy':<16} {'each seed':<24} {'wall min':>10}  device")
    for key, value in records.items():
        spread = f" ± {100 * value['std_test_acc']:.2f}" if value["std_test_acc"] is not None else ""
        each = ", ".join(f"{100 * s['test_acc']:.2f}" for s in value["seeds"])
        minutes = statistics.median(s["wall_time_s"] for s in value["seeds"]) / 60
        print(f"{key:<36} {value['epochs']:>6}  {100 * value['mean_test_acc']:.2f}{spread} %{'':<4} {each:<24} "
              f"{minutes:>10.1f}  {value['seeds'][0]['device']}"
              + (f"  (unfinished: {', '.join(value['unfinished'])})" if value["unfinished"] else ""))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
