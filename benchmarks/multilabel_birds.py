"""Benchmark: multi-label classification on real photos — mosaics of the shared birds.

How the mosaics are made (`make_mosaics`, seeded; anyone can rebuild them from ../shared/data/birds-subset50):

- SPECIES species (the first, in folder order); their photos split as the lab's lists say (train.txt / test.txt),
  and the training photos split again, VAL_SHARE of each species held for validation mosaics;
- each mosaic is 224×224: a 2×2 grid of 112-px cells, holding 1 to 4 photos (drawn uniformly) of as many distinct
  species (drawn uniformly), each photo resized to 112×112 and put in a random cell; empty cells are mid-grey;
- labels = the species present; a test mosaic is made only of test photos, a validation mosaic only of the
  held-out training photos, so no photo is in two splits (the thresholds are chosen on validation mosaics);
- written as JPEG (quality 95) with `labels.csv` (path,labels,split; labels `;`-separated).

Then Lite0 `birdnet_v0` (frozen backbone, a head on cached features) and `birdnet_recipe` (probe, then fine-tune:
shortened to 2 fine-tuning epochs on this CPU as in birds_lite0.py) train on them over 3 seeds: mAP, micro/macro
F1 and exact match at the thresholds chosen on validation, Hamming loss, the time per run and per experiment.
Two more variants of `birdnet_v0` show what two choices are worth: the asymmetric loss (`train.loss=asl`) and
a fixed 0.5 threshold instead of each class's chosen on validation (`train.thresholds=fixed`).

    python benchmarks/multilabel_birds.py [--seeds 1 2 3] [--variants NAME[:KEY=VALUE,...] ...] [--work DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import SHARED_DATA, write_json

from cnnlab.config import load_experiment
from cnnlab.fileio import read_json
from cnnlab.reporting.tables import pm, render_table
from cnnlab.studies import run_experiment

SPECIES = 15
CELL = 112
COUNTS = {"train": 700, "val": 150, "test": 400}  # mosaics per split
VAL_SHARE = 0.2  # of each species' training photos, for validation mosaics
SHORTENED = {"birdnet_recipe": {"train.phases.1.epochs": 2}}  # as benchmarks/birds_lite0.py
FIGURES = ("test_map", "test_micro_f1", "test_macro_f1", "test_exact_match", "test_hamming_loss")
VARIANTS = ("birdnet_v0", "birdnet_v0:train.loss=asl", "birdnet_v0:train.thresholds=fixed", "birdnet_recipe")


def variant(spec: str) -> tuple[str, dict]:
    """'NAME[:KEY=VALUE,...]' → (the experiment, its overrides)."""
    name, _, rest = spec.partition(":")
    return name, dict(item.split("=", 1) for item in rest.split(",") if item)


def photos_by_split(birds: Path, seed: int) -> tuple[list[str], dict[str, dict[int, list[Path]]]]:
    """The species kept and, per split, each species' photos (train / val from train.txt, test from test.txt)."""
    species = sorted(p.name for p in birds.iterdir() if p.is_dir())[:SPECIES]
    listed = {name: (birds / f"{name}.txt").read_text().split() for name in ("train", "test")}
    out: dict[str, dict[int, list[Path]]] = {s: {c: [] for c in range(SPECIES)} for s in COUNTS}
    rng = np.random.default_rng(seed)
    for split, lines in listed.items():
        for line in lines:
            folder = line.split("/")[0]
            if folder in species:
                out[split][species.index(folder)].append(birds / line)
    for c in range(SPECIES):  # a share of each species' training photos for validation mosaics
        photos = sorted(out["train"][c])
        rng.shuffle(photos)
        held = max(1, round(VAL_SHARE * len(photos)))
        out["val"][c], out["train"][c] = photos[:held], photos[held:]
    return species, out


def make_mosaics(birds: Path, folder: Path, seed: int = 0) -> Path:
    """Write the mosaics and labels.csv into `folder` (once: an existing labels.csv is reused)."""
    csv_path = folder / "labels.csv"
    if csv_path.is_file():
        return csv_path
    folder.mkdir(parents=True, exist_ok=True)
    species, photos = photos_by_split(birds, seed)
    rng = np.random.default_rng(seed)
    rows = ["path,labels,split"]
    for split, count in COUNTS.items():
        for i in range(count):
            k = int(rng.integers(1, 5))
            chosen = rng.choice(SPECIES, size=k, replace=False)
            cells = rng.choice(4, size=k, replace=False)
            canvas = Image.new("RGB", (2 * CELL, 2 * CELL), (128, 128, 128))
            for c, cell in zip(chosen, cells):
                pool = photos[split][int(c)]
                with Image.open(pool[int(rng.integers(len(pool)))]) as photo:
                    tile = photo.convert("RGB").resize((CELL, CELL), Image.BILINEAR)
                canvas.paste(tile, ((int(cell) % 2) * CELL, (int(cell) // 2) * CELL))
            name = f"{split}/{i:04d}.jpg"
            (folder / split).mkdir(exist_ok=True)
            canvas.save(folder / name, quality=95)
            rows.append(f"{name},{';'.join(species[int(c)] for c in sorted(chosen))},{split}")
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help="experiments, each with its own overrides after a colon: birdnet_v0:train.loss=asl")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cnnlab-multilabel-"))
    tick = time.perf_counter()
    reused = (work / "mosaics" / "labels.csv").is_file()
    data = make_mosaics(SHARED_DATA / "birds-subset50", work / "mosaics")
    made_s = None if reused else time.perf_counter() - tick
    payload: dict = {"data": str(SHARED_DATA / "birds-subset50"), "species": SPECIES, "mosaics": COUNTS,
                     "mosaic_s": made_s, "seeds": args.seeds, "protocol": SHORTENED, "variants": {}}
    for spec in args.variants:
        name, own = variant(spec)
        overrides = {"model_args.backbone": "efficientnet_lite0", "model_args.weights": "default", "seeds": args.seeds,
                     "data.path": str(data), "out": str(work / "runs"), "data.leak_check": "off",
                     "train.feature_cache_dir": str(work / "features"), **SHORTENED.get(name, {}), **own}
        cfg = load_experiment(name, overrides=overrides)
        start = time.perf_counter()
        folder = run_experiment(cfg, progress=False, log=lambda s: None)
        elapsed = time.perf_counter() - start
        runs = [read_json(folder / f"seed-{s}" / "results.json") for s in args.seeds]
        payload["variants"][spec] = {
            "folder": str(folder), "experiment_s": elapsed,
            "runs": [{"seed": r["seed"], **{k: r[k] for k in FIGURES}, "test_loss": r["test_loss"],
                      "wall_time_s": r["wall_time_s"], "one_off_time_s": r.get("one_off_time_s"),
                      "label_cardinality": r["test_label_cardinality"]} for r in runs]}
        print(f"{spec}: {elapsed:.0f} s", flush=True)
    path = write_json("multilabel_birds", payload)
    header = ["variant", "mAP", "micro-F1", "macro-F1", "exact match", "Hamming loss", "run (s, median)",
              "experiment (s)"]
    rows = []
    for spec, entry in payload["variants"].items():
        runs = entry["runs"]
        rows.append([spec, *(pm([r[k] for r in runs], percent=True) for k in FIGURES),
                     f"{np.median([r['wall_time_s'] for r in runs]):.0f}", f"{entry['experiment_s']:.0f}"])
    print(render_table(header, rows))
    made = "reused" if made_s is None else f"made in {made_s:.0f} s"
    print(f"{sum(COUNTS.values())} mosaics of {SPECIES} species ({made}); the experiment time includes the feature "
          f"extraction (cached for the runs after the first); results: {path}")


if __name__ == "__main__":
    main()
