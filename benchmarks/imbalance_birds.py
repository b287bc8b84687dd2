"""Benchmark: imbalanced classes, measured. A long-tailed version of the birds, BirdNet V0 and
cnnlab's recipe on EfficientNet-Lite0, with and without the imbalance options, 3 seeds.

The long tail: ../shared/data/birds-subset50 in the lab's layout, every training image of the
first species kept, then geometrically fewer down to 4 for the last (n_k = round(N_0 · (4 / N_0)^(k / 49)));
the test split untouched (30 images of each species). Written under a temporary folder (hard
links where the file system allows).

Figures per variant: test accuracy, balanced accuracy, macro-F1 (mean ± std over the seeds), and
the recall of the five species with the fewest training images (pooled over the seeds).

    python benchmarks/imbalance_birds.py [--seeds 1 2 3] [--only birdnet_v0] [--fine-tune-epochs 10]
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
from pathlib import Path

from _common import SHARED_DATA, write_json

from cnnlab.config import load_experiment
from cnnlab.fileio import read_json
from cnnlab.reporting.tables import pm, render_table
from cnnlab.studies import run_experiment

# (experiment, label, overrides)
VARIANTS = [
    ("birdnet_v0", "none", {}),
    ("birdnet_v0", "class_weights: balanced", {"train.class_weights": "balanced"}),
    ("birdnet_v0", "class_weights: effective", {"train.class_weights": "effective", "train.class_weights_beta": 0.99}),
    ("birdnet_v0", "sampler: balanced", {"data.sampler": "balanced"}),
    ("birdnet_v0", "sampler: sqrt", {"data.sampler": "sqrt"}),
    ("birdnet_recipe", "none", {}),
    ("birdnet_recipe", "class_weights: balanced", {"train.class_weights": "balanced"}),
    ("birdnet_recipe", "sampler: sqrt", {"data.sampler": "sqrt"}),
]


def long_tailed(source: Path, target: Path, smallest: int = 4) -> dict[str, int]:
    """The lab layout of `source` with a long-tailed train.txt (each image hard-linked, else copied: cnnlab
    refuses list entries that resolve outside the dataset folder, so symlinks would not do); counts per class."""
    lines = [l for l in (source / "train.txt").read_text().splitlines() if l.strip()]
    by_class: dict[str, list[str]] = {}
    for line in lines:
        by_class.setdefault(line.split("/")[0], []).append(line)
    classes = sorted(by_class)
    first = len(by_class[classes[0]])
    kept, counts = [], {}
    for k, name in enumerate(classes):
        n = max(smallest, round(first * (smallest / first) ** (k / (len(classes) - 1))))
        counts[name] = min(n, len(by_class[name]))
        kept += by_class[name][:counts[name]]
    test = [l for l in (source / "test.txt").read_text().splitlines() if l.strip()]
    for line in kept + test:
        (target / line).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / line, target / line)
        except OSError:
            shutil.copyfile(source / line, target / line)
    (target / "train.txt").write_text("\n".join(kept) + "\n")
    (target / "test.txt").write_text("\n".join(test) + "\n")
    return counts


def rarest_recall(folder: Path, counts: dict[str, int], k: int = 5) -> dict[str, float]:
    """Recall of the k classes with the fewest training images, from the pooled per_class.csv."""
    pooled = folder / "per_class.csv"  # one seed: its own folder holds the only table
    table = pooled if pooled.is_file() else next(folder.glob("seed-*/per_class.csv"))
    per_class = {row["class"]: float(row["recall"]) for row in csv.DictReader(table.read_text().splitlines())}
    rare = sorted(counts, key=lambda c: (counts[c], c))[:k]
    return {name: per_class[name] for name in rare}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--data", default=str(SHARED_DATA / "birds-subset50"))
    ap.add_argument("--only", nargs="+", help="experiments to run (default: every variant)")
    ap.add_argument("--fine-tune-epochs", type=int, default=10, help="birdnet_recipe's second phase")
    ap.add_argument("--name", default="imbalance_birds")
    args = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "birds-long-tailed"
        counts = long_tailed(Path(args.data), data)
        payload = {"seeds": args.seeds, "train_images": sum(counts.values()), "largest": max(counts.values()),
                   "smallest": min(counts.values()), "fine_tune_epochs": args.fine_tune_epochs, "rows": rows}
        print(f"long-tailed birds: {sum(counts.values())} training images, {max(counts.values())} → "
              f"{min(counts.values())} per species; test split untouched", flush=True)
        for experiment, label, overrides in VARIANTS:
            if args.only and experiment not in args.only:
                continue
            base = {"data.path": str(data), "model_args.backbone": "efficientnet_lite0", "seeds": args.seeds,
                    "out": str(Path(tmp) / "runs"), "train.feature_cache_dir": str(Path(tmp) / "cache"), **overrides}
            if experiment == "birdnet_recipe":
                base["train.phases.1.epochs"] = args.fine_tune_epochs
            folder = run_experiment(load_experiment(experiment, overrides=base), progress=False, log=lambda s: None)
            summary = read_json(folder / "summary.json")
            runs = summary["runs"]
            row = {"experiment": experiment, "variant": label, "overrides": overrides,
                   **{key: [r[key] for r in runs] for key in ("test_acc", "test_bal_acc", "test_macro_f1")},
                   "rarest_recall": rarest_recall(folder, counts), "wall_time_s": [r["wall_time_s"] for r in runs],
                   "precision": runs[0]["precision"]}
            rows.append(row)
            write_json(args.name, payload)  # partial results survive an interruption
            print(f"{experiment} / {label}: acc {pm(row['test_acc'], percent=True)}, balanced "
                  f"{pm(row['test_bal_acc'], percent=True)}, macro-F1 {pm(row['test_macro_f1'], percent=True)}, "
                  f"rarest five {', '.join(f'{100 * v:.0f}' for v in row['rarest_recall'].values())} %", flush=True)
    header = ["experiment", "imbalance option", "accuracy", "balanced accuracy", "macro-F1", "recall of the 5 rarest"]
    body = [[r["experiment"], r["variant"], pm(r["test_acc"], percent=True), pm(r["test_bal_acc"], percent=True),
             pm(r["test_macro_f1"], percent=True),
             f"{100 * sum(r['rarest_recall'].values()) / len(r['rarest_recall']):.1f} %"] for r in rows]
    print()
    print(render_table(header, body))
    print(f"written {write_json(args.name, payload)}")


if __name__ == "__main__":
    main()
