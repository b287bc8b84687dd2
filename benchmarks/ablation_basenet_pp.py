"""Benchmark: the lab's BaseNet → BaseNet++ ablation, 5 steps × N seeds, with the significance table.

Full protocol (needs a GPU; target: under 10 minutes on one H200, final step ≥ 66.25 %):
    python benchmarks/ablation_basenet_pp.py --epochs 50 --device cuda
Shortened CPU protocol (what a 2-core machine can do in minutes):
    python benchmarks/ablation_basenet_pp.py --epochs 10 --subset 2000 --amp bf16 --device cpu
"""
from __future__ import annotations

import argparse
import tempfile
import time

from _common import SHARED_DATA, write_json

from cnnlab.studies.ablation import load_ablation, run_ablation
from cnnlab.fileio import read_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--subset", type=int, default=0, help="training images kept before the 10 %% hold-out (0: all)")
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=str(SHARED_DATA / "cifar100-subset25"))
    args = ap.parse_args()
    ablation = load_ablation("basenet_pp")
    ablation.seeds = args.seeds
    overrides = {"data.path": args.data, "train.epochs": args.epochs, "device": args.device, "train.amp": args.amp,
                 "data.subset": args.subset}
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as out:
        tick = time.perf_counter()
        group = run_ablation(ablation, base_overrides=overrides, out=out, progress=False, log=lines.append)
        wall = time.perf_counter() - tick
        table = read_json(group / "ablation.json")
        markdown = (group / "ablation.md").read_text()
    print("\n".join(lines[-12:]))
    print(f"\nwall time of the whole ablation: {wall / 60:.1f} min")
    path = write_json(f"ablation_basenet_pp_e{args.epochs}" + (f"_n{args.subset}" if args.subset else ""),
                      {"args": vars(args), "wall_time_s": wall, "ablation": table, "markdown": markdown})
    print(f"written {path}")


if __name__ == "__main__":
    main()
