"""Which test-time augmentation? Every train.tta mode on the saved weights of finished runs.

    python benchmarks/tta_views.py RUNS/cifar_recipe/<stamp> [more experiment or seed folders]

For each finished seed under the folders, the saved weights (model.safetensors: the ones the run
tested, its weight average where it kept one) evaluate the run's own validation and test splits,
read again from its config.yaml, with each mode of train.tta: off (the image), flip (+ its
mirror), flip_shift (+ both moved one pixel up-left and down-right: 6 views). Training is not
touched, so the modes differ in the views alone. The mode is chosen by the mean validation
accuracy; the test split only reports. Prints a table; writes results/tta_views.json (the
experiment's name is the record's key, so one file holds the recipes measured).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS, write_json

from cnnlab.config import TTA_MODES, TrainConfig
from cnnlab.inference.trained import load_trained, run_data, trained_runs
from cnnlab.reporting.tables import render_table
from cnnlab.training.loop import evaluate

OUT = RESULTS / "tta_views.json"
EVAL_BATCH = TrainConfig().eval_batch_size  # train.eval_batch_size's default, which no preset changes


def accuracy(trained, split, mode: str, bf16: bool) -> tuple[float, float]:
    """Accuracy of `trained` on `split` with the views of `mode`, through the trainer's own evaluation
    (in bf16 autocast where the run tested so, to reproduce its figure), and the seconds it took."""
    tick = time.perf_counter()
    metrics = evaluate(trained.model, split, preprocess=lambda images, train: trained.preprocess(images),
                       loss_fn=torch.nn.CrossEntropyLoss(), batch_size=EVAL_BATCH,
                       num_classes=len(trained.class_names), amp=bf16, channels_last=True, tta=mode)
    return metrics["acc"], time.perf_counter() - tick


def measure_seed(weights: Path) -> dict:
    trained = load_trained(weights)
    results = json.loads((weights.parent / "results.json").read_text())
    splits = run_data(trained)
    if splits.val is None:
        raise SystemExit(f"{weights.parent}: the run kept no validation split (data.val_fraction: 0); "
                         "a mode can only be chosen on validation")
    entry = {"folder": str(weights.parent.resolve()), "experiment": results["experiment"], "seed": results["seed"],
             "tested_with": trained.tta, "recorded_test_acc": results["test_acc"],
             "precision": results["precision"], "modes": {}}
    bf16 = results["precision"] == "bf16"
    for mode in TTA_MODES:
        val, _ = accuracy(trained, splits.val, mode, bf16)
        test, seconds = accuracy(trained, splits.test, mode, bf16)
        entry["modes"][mode] = {"val_acc": val, "test_acc": test, "test_s": seconds}
    return entry


def summarise(seeds: list[dict]) -> dict:
    modes = {}
    for mode in TTA_MODES:
        vals = [s["modes"][mode]["val_acc"] for s in seeds]
        tests = [s["modes"][mode]["test_acc"] for s in seeds]
        modes[mode] = {"mean_val_acc": statistics.mean(vals), "mean_test_acc": statistics.mean(tests),
                       "std_test_acc": statistics.stdev(tests) if len(tests) > 1 else None,
                       "median_test_s": statistics.median(s["modes"][mode]["test_s"] for s in seeds)}
    # ties go to the cheaper mode (TTA_MODES runs from the fewest views to the most)
    chosen = max(TTA_MODES, key=lambda m: (round(modes[m]["mean_val_acc"], 6), -TTA_MODES.index(m)))
    return {"modes": modes, "chosen_by_val": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="experiment or seed folders of finished runs")
    args = parser.parse_args()
    weights = [w for folder in args.folders for w in trained_runs(folder)]
    seeds = [measure_seed(w) for w in weights]
    experiments = {seed["experiment"] for seed in seeds}
    if len(experiments) != 1:
        raise SystemExit(f"the folders hold runs of several experiments ({', '.join(sorted(experiments))}); "
                         "give one experiment's runs at a time")
    name = experiments.pop()
    summary = summarise(seeds)
    rows = [[mode, f"{100 * m['mean_val_acc']:.2f} %",
             f"{100 * m['mean_test_acc']:.2f}"
             + (f" ± {100 * m['std_test_acc']:.2f}" if m["std_test_acc"] is not None else "") + " %",
             ", ".join(f"{100 * s['modes'][mode]['test_acc']:.2f}" for s in seeds), f"{m['median_test_s']:.1f}",
             "← chosen" if mode == summary["chosen_by_val"] else ""]
            for mode, m in summary["modes"].items()]
    print(f"{name}: test-time augmentation on the saved weights of {len(seeds)} run(s)")
    print(render_table(["train.tta", "mean validation", "test", "each seed", "s for the test split", ""], rows))
    records = json.loads(OUT.read_text()).get("records", {}) if OUT.is_file() else {}
    records[name] = {"seeds": seeds, **summary}
    print(f"→ {write_json(OUT.stem, {'records': records})}")


if __name__ == "__main__":
    main()
