"""The birds recipe on EfficientNet-Lite0 (and Lite2), variants judged on the validation split, on this CPU.

    python benchmarks/birds_recipe.py --run probe_224 probe_crop_224 probe_288 recipe_short recipe_strong
    python benchmarks/birds_recipe.py --run lite2_probe lite2_recipe
    python benchmarks/birds_recipe.py --folder recipe_strong=RUNS/birdnet_recipe/<stamp> ...     # reads finished ones
    python benchmarks/birds_recipe.py --folder lite2_recipe_260=<seed 1> --folder lite2_recipe_260=<seeds 2, 3>

Each variant is a preset plus overrides (VARIANTS below), 3 seeds, on ../shared/data/birds-subset50
(1,304 train / 145 validation / 1,500 test images, 50 species). `--run` trains the named variants
one after another with `cnnlab run` (the time of one: the probes ~2–4 min, the strong fine-tune
~13 min a seed on the 2-core CPU); `--folder NAME=PATH` summarises an experiment folder trained
with that variant's overrides (checked against its experiment.yaml; a variant named again joins the
seeds of its folders, which must share one protocol). The variant to keep is the
one with the best mean validation accuracy; the test figures are reported for every variant but
never used to choose. Writes results/birds_recipe_cpu.json (merged with the variants recorded
there before) and prints the table. gpu_suite.py runs the same variants on a lent GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, SHARED_DATA, write_json
from _records import experiment_record, merge_records

from cnnlab.config import load_experiment

LITE0 = {"model_args.backbone": "efficientnet_lite0"}
LITE2 = {"model_args.backbone": "efficientnet_lite2"}
# birdnet_recipe's fine-tuning settings as the preset has them now, spelled out so that a folder
# trained before they became the preset is checked against them too
PRESET_NOW = {"train.tta": "flip", "train.ema": 0.99, "preprocess.augment.zoom": 0.15, "train.phases.1.epochs": 10,
              "train.phases.1.backbone_lr_decay": 0.8}
VARIANTS = {
    # The linear probe (the lab's V0 head on cached features), by input handling.
    "probe_224": ("birdnet_v0", {}),
    "probe_crop_224": ("birdnet_v0", {"data.resize": "crop"}),
    "probe_288": ("birdnet_v0", {"data.image_size": 288}),
    # cnnlab's LP-FT recipe as it was in 0.3 (5 fine-tuning epochs, no EMA, zoom, layer decay or
    # TTA), and as the preset has it now (the stronger, longer fine-tune chosen on validation).
    "recipe_short": ("birdnet_recipe", {"train.tta": "off", "train.ema": 0.0, "preprocess.augment.zoom": 0.0,
                                        "train.phases.1.epochs": 5, "train.phases.1.backbone_lr_decay": 1.0}),
    "recipe_strong": ("birdnet_recipe", PRESET_NOW),
    # The same probe and preset on EfficientNet-Lite2 (77.6 % ImageNet top-1 against Lite0's 75.1 %;
    # 1.5x the multiply-adds at the lab's 224 px, which is kept: the photographs are 227 px) ...
    "lite2_probe": ("birdnet_v0", LITE2),
    "lite2_recipe": ("birdnet_recipe", {**LITE2, "data.image_size": 224, **PRESET_NOW}),
    # ... and at Lite2's own 260 px (2x Lite0's multiply-adds at 224; the one chosen on validation,
    # and since 0.7 the preset's size for Lite2: image_size 0 is the backbone's own)
    "lite2_recipe_260": ("birdnet_recipe", {**LITE2, "data.image_size": 260, **PRESET_NOW}),
}
GOAL = 0.92


def summarise(name: str, folders: list[Path]) -> dict:
    """One variant's row from the experiment folders it was trained in, their seeds joined (_records.py:
    the folders must share one protocol; a seed in two folders keeps the later folder's run)."""
    preset, overrides = VARIANTS[name]
    record = None
    for folder in folders:
        recorded = folder / "experiment.yaml"
        as_run = load_experiment(recorded)
        for key, value in {**LITE0, **overrides}.items():  # the folder must have been trained as the variant
            if load_experiment(recorded, overrides={key: value}) != as_run:
                raise SystemExit(f"{folder}: trained with another {key} than variant {name}'s {value!r}")
        _, found = experiment_record(folder, extra=lambda unit, results: {
            "seed": results["seed"], "one_off_time_s": results.get("one_off_time_s", 0.0)})
        record = found if record is None else merge_records(record, found)
    runs = record["seeds"]
    val, test = [r["final_val_acc"] for r in runs], [r["test_acc"] for r in runs]
    return {"preset": preset, "overrides": overrides, "folders": record["folders"], "seeds": [r["seed"] for r in runs],
            "unfinished": record["unfinished"],
            "val_acc": val, "test_acc": test, "mean_val_acc": statistics.mean(val),
            "mean_test_acc": statistics.mean(test), "std_test_acc": statistics.stdev(test) if len(test) > 1 else 0.0,
            "wall_time_s": [r["wall_time_s"] for r in runs],
            "one_off_time_s": [r["one_off_time_s"] for r in runs],  # feature extraction, once
            "median_epoch_s": [r["median_epoch_s"] for r in runs]}


def train(name: str, data: str, out: Path) -> Path:
    preset, overrides = VARIANTS[name]
    sets = [arg for key, value in {**LITE0, **overrides}.items() for arg in ("--set", f"{key}={value}")]
    subprocess.run([sys.executable, "-m", "cnnlab", "run", preset, "--data", data, "--seeds", "1", "2", "3",
                    "--out", str(out / name), "--no-progress", "--set", "data.cache=true", *sets], check=True)
    return sorted((out / name / preset).iterdir())[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs="*", default=[], choices=sorted(VARIANTS), metavar="VARIANT")
    ap.add_argument("--folder", nargs="+", action="extend", default=[], metavar="VARIANT=PATH")
    ap.add_argument("--data", default=str(SHARED_DATA / "birds-subset50"))
    ap.add_argument("--out", type=Path, help="parent of the run folders (default: a temporary folder)")
    args = ap.parse_args()
    if not args.run and not args.folder:
        ap.error("give --run VARIANT ... or --folder VARIANT=PATH ...")
    folders: dict[str, list[Path]] = {}
    for item in args.folder:  # a variant named twice has its seeds in two folders (e.g. seed 1, then 2 and 3)
        name, _, path = item.partition("=")
        if name not in VARIANTS or not path:
            ap.error(f"--folder {item}: expected VARIANT=PATH with VARIANT one of {', '.join(VARIANTS)}")
        folders.setdefault(name, []).append(Path(path))
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        rows = {name: summarise(name, folder) for name, folder in folders.items()}
        for name in args.run:
            rows[name] = summarise(name, [train(name, args.data, out)])
    previous = RESULTS / "birds_recipe_cpu.json"
    kept = json.loads(previous.read_text())["variants"] if previous.is_file() else {}
    for row in kept.values():  # recorded before a variant could span folders
        if "folder" in row:
            row["folders"] = [row.pop("folder")]
    variants = {**kept, **rows}
    # only variants measured over 3 seeds compete (the goal is a mean of 3); fewer are shown, not chosen
    recipes = [n for n in variants if variants[n]["preset"] == "birdnet_recipe" and len(variants[n]["seeds"]) >= 3]
    best_val = max((variants[n]["mean_val_acc"] for n in recipes), default=None)
    # 145 validation images: a tie is common; among tied variants the cheaper one is kept
    tied = [n for n in recipes if abs(variants[n]["mean_val_acc"] - best_val) < 1e-9]
    chosen = min(tied, key=lambda n: statistics.median(variants[n]["wall_time_s"]), default=None)
    print(f"{'variant':<18} {'backbone':<19} {'mean val':>9} {'mean test':>17} {'each seed (test)':>26} {'training s':>11} "
          f"{'features s':>11}")
    for name, row in variants.items():
        seeds = ", ".join(f"{100 * a:.2f}" for a in row["test_acc"])
        backbone = {**LITE0, **row["overrides"]}["model_args.backbone"]
        spread = f"± {100 * row['std_test_acc']:.2f} %" if len(row["seeds"]) > 1 else "% (1 seed)"
        print(f"{name:<18} {backbone:<19} {100 * row['mean_val_acc']:>8.2f}% {100 * row['mean_test_acc']:>8.2f} "
              f"{spread:<10} {seeds:>24} {statistics.median(row['wall_time_s']):>11.0f} "
              f"{max(row['one_off_time_s']):>11.0f}")
    met = chosen is not None and variants[chosen]["mean_test_acc"] >= GOAL
    others = [n for n in tied if n != chosen]
    tie = f" (tied with {', '.join(others)}; the cheaper)" if others else ""
    print(f"chosen by validation: {chosen}{tie}; goal {100 * GOAL:.0f} % (test, mean of 3 seeds): "
          f"{'met' if met else 'not met'}")
    path = write_json("birds_recipe_cpu", {"data": args.data, "goal_test_acc": GOAL, "chosen_by_val": chosen,
                                           "tied_on_val": tied, "meets_goal": met, "variants": variants})
    print(f"written {path}")


if __name__ == "__main__":
    main()
