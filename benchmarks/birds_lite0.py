"""Benchmark: BirdNet V0–V4, classic heads and cnnlab's recipe on real birds with a real
ImageNet backbone (EfficientNet-Lite0, the one whose weights can be had offline), 3 seeds.

Data: ../shared/data/birds-subset50 (50 species of CUB-200-2011 in the lab's layout,
1,449 train / 1,500 test). CPU-sized protocol: the frozen-backbone variants (V0–V2) train
their 15 epochs on cached features; the variants that train the backbone are shortened
(V3: 2 epochs; V4: 2 warm-up + 2 unfrozen; recipe: 15 probe epochs on cached features +
2 fine-tuning epochs) and use bf16 autocast.
Also measures the feature cache's speed-up for V0.

    python benchmarks/birds_lite0.py [--seeds 1 2 3] [--variants birdnet_recipe --merge]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

from _common import RESULTS, SHARED_DATA, write_json

from cnnlab.config import load_experiment
from cnnlab.fileio import read_json
from cnnlab.reporting.tables import pm
from cnnlab.studies import run_experiment
from cnnlab.reporting.tables import compare_table
from cnnlab.studies.compare import run_compare

SHORTENED = {
    "birdnet_v3": {"train.phases.0.epochs": 2},
    "birdnet_v4": {"train.phases.0.epochs": 2, "train.phases.1.epochs": 2},
    "birdnet_recipe": {"train.phases.1.epochs": 2},  # the probe phase keeps its 15 epochs on cached features
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--data", default=str(SHARED_DATA / "birds-subset50"))
    ap.add_argument("--variants", nargs="+", default=["birdnet_v0", "birdnet_v1", "birdnet_v2", "birdnet_v3",
                                                       "birdnet_v4", "birdnet_recipe"])
    ap.add_argument("--merge", action="store_true",
                    help="rerun only --variants: keep the other rows and the cache timing of results/birds_lite0.json")
    args = ap.parse_args()
    base = {"data.path": args.data, "model_args.backbone": "efficientnet_lite0", "model_args.weights": "default",
            "seeds": args.seeds, "device": "cpu", "train.amp": "bf16"}
    rows: list[dict] = []
    payload = {"protocol": SHORTENED, "seeds": args.seeds, "rows": rows}
    if args.merge:
        previous = json.loads((RESULTS / "birds_lite0.json").read_text())
        rows.extend(r for r in previous["rows"] if r["name"] not in args.variants and r["kind"] != "classic")
        payload["feature_cache"] = previous["feature_cache"]
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
        base["train.feature_cache_dir"] = cache
        if not args.merge:  # 1. the feature cache's speed-up for V0
            measure_cache(base, args, out, payload)
        # 2. every variant, 3 seeds; classic heads on the same cached features
        for index, name in enumerate(args.variants):
            group = run_compare([name], overrides={**base, **SHORTENED.get(name, {})},
                                classic=["logreg", "linear_svm", "knn"] if index == len(args.variants) - 1 else [],
                                out=out, progress=False, log=lambda s: None)
            rows.extend(json.loads((group / "compare.json").read_text())["rows"])
            for row in rows:
                row.pop("folder", None)
            write_json("birds_lite0", payload)  # partial results survive an interruption
            for row in rows[-4 if index == len(args.variants) - 1 else -1:]:
                print(f"{row['name']}: test accuracy {pm(row['test_acc'], percent=True)}", flush=True)
    print()
    print(compare_table(rows))
    path = write_json("birds_lite0", payload)
    print(f"written {path}")


def measure_cache(base: dict, args, out: str, payload: dict) -> None:
    """V0 from a cold cache (features computed once), and epochs that recompute the backbone."""
    tick = time.perf_counter()
    cold = run_experiment(load_experiment("birdnet_v0", overrides={**base, "seeds": [args.seeds[0]], "out": out}),
                          progress=False, log=lambda s: None)
    cold_s = time.perf_counter() - tick
    cached_epoch = read_json(cold / f"seed-{args.seeds[0]}" / "results.json")["median_epoch_time_s"]
    nocache = run_experiment(load_experiment("birdnet_v0", overrides={
        **base, "seeds": [args.seeds[0]], "out": out, "train.feature_cache": False,
        "train.phases.0.epochs": 2}), progress=False, log=lambda s: None)
    nocache_epoch = read_json(nocache / f"seed-{args.seeds[0]}" / "results.json")["median_epoch_time_s"]
    payload["feature_cache"] = {"cold_run_s": cold_s, "cached_epoch_s": cached_epoch,
                                "uncached_epoch_s": nocache_epoch, "epoch_speedup": nocache_epoch / cached_epoch,
                                "run_15_epochs_uncached_s_estimated": 15 * nocache_epoch}
    print(f"feature cache: {nocache_epoch:.1f}s per epoch recomputing the backbone vs {cached_epoch:.3f}s from "
          f"the cache ({nocache_epoch / cached_epoch:.0f}x); a cold V0 run incl. extraction: {cold_s:.0f}s "
          f"vs ~{15 * nocache_epoch:.0f}s for 15 uncached epochs")


if __name__ == "__main__":
    main()
