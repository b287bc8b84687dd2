"""Benchmark: `cnnlab audit` on the shared birds with planted faults, and what auditing buys a model.

The birds (../shared/data/birds-subset50, the lab's train/test lists) are copied to a scratch folder (the
shared data is never written) and listed in noisy.csv (path,label,split) with planted faults:

- 5 % of the training rows relabelled to another species (seeded);
- 20 test photos copied into train under their true label: 7 as they are, 7 resized to 60 % and re-encoded
  (JPEG 75), 6 re-encoded at JPEG 40.

Then: `cnnlab audit noisy.csv --write-split audited.csv` from a cold feature cache and again from a warm one;
precision and recall of the flagged label issues against the planted flips (train and validation rows); the
share of planted leaks found and the leak pairs nobody planted; the run's own leak check on noisy.csv; and
`birdnet_v0` (Lite0, 3 seeds) trained on noisy.csv and on audited.csv (the same 1,500 test photos).

    python benchmarks/audit_birds.py [--seeds 1 2 3] [--flip 0.05] [--work DIR]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import SHARED_DATA, write_json

from cnnlab.config import load_experiment
from cnnlab.reporting.tables import pm, render_table
from cnnlab.studies import run_experiment
from cnnlab.studies.audit import run_audit


def planted_csv(work: Path, flip: float, seed: int) -> dict:
    """work/birds (a copy), work/noisy.csv and what was planted in it."""
    source = SHARED_DATA / "birds-subset50"
    birds = work / "birds"
    if not birds.exists():
        shutil.copytree(source, birds, ignore=shutil.ignore_patterns("*.txt"))
    rng = np.random.default_rng(seed)
    species = sorted(p.name for p in birds.iterdir() if p.is_dir() and not p.name.startswith("_"))
    rows = []
    for split, listing in (("train", "train.txt"), ("test", "test.txt")):
        for line in (source / listing).read_text().split():
            rows.append([f"birds/{line}", line.split("/")[0], split])
    train = [i for i, r in enumerate(rows) if r[2] == "train"]
    flipped = rng.choice(train, size=round(flip * len(train)), replace=False)
    for i in flipped:
        rows[i][1] = species[(species.index(rows[i][1]) + 1 + rng.integers(len(species) - 1)) % len(species)]
    test = [i for i, r in enumerate(rows) if r[2] == "test"]
    copied = rng.choice(test, size=20, replace=False)
    leaked = birds / "_leaked"
    leaked.mkdir(exist_ok=True)
    planted_leaks = []
    for k, i in enumerate(copied):
        original = work / rows[i][0]
        how = "copy" if k < 7 else ("resized" if k < 14 else "jpeg40")
        target = leaked / f"{k:02d}_{how}.jpg"
        if how == "copy":
            shutil.copyfile(original, target)
        else:
            image = Image.open(original).convert("RGB")
            if how == "resized":
                image = image.resize((round(image.width * 0.6), round(image.height * 0.6)))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=75 if how == "resized" else 40)
            target.write_bytes(buffer.getvalue())
        rows.append([f"birds/_leaked/{target.name}", rows[i][1], "train"])
        planted_leaks.append((str(target.resolve()), str(original.resolve()), how))
    with open(work / "noisy.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return {"flipped": {str((work / rows[i][0]).resolve()) for i in flipped}, "leaks": planted_leaks,
            "rows": len(rows)}


def score_audit(folder: Path, planted: dict) -> dict:
    issues = list(csv.DictReader((folder / "label_issues.csv").open()))
    flagged = {r["image"] for r in issues if r["split"] != "test"}
    flipped = planted["flipped"]
    hits = len(flagged & flipped)
    pairs = [r for r in csv.DictReader((folder / "duplicates.csv").open()) if r["leak"] == "True"]
    found = {frozenset((r["image_a"], r["image_b"])) for r in pairs}
    planted_pairs = {frozenset((copy, original)): how for copy, original, how in planted["leaks"]}
    by_how = {}
    for pair, how in planted_pairs.items():
        by_how.setdefault(how, []).append(pair in found)
    return {"label_issues_flagged_train_val": len(flagged), "label_issues_flagged_test": len(issues) - len(flagged),
            "planted_flips": len(flipped), "flips_found": hits,
            "precision": hits / max(1, len(flagged)), "recall": hits / max(1, len(flipped)),
            "leaks_planted": len(planted_pairs), "leaks_found": sum(p in found for p in planted_pairs),
            "leaks_found_by_kind": {how: f"{sum(v)}/{len(v)}" for how, v in by_how.items()},
            "leak_pairs_not_planted": len(found - set(planted_pairs)),
            "not_planted_examples": [sorted(p) for p in list(found - set(planted_pairs))[:5]]}


def train(data: Path, seeds: list[int], work: Path, name: str) -> dict:
    lines: list[str] = []
    cfg = load_experiment("birdnet_v0", overrides={
        "data.path": str(data), "model_args.backbone": "efficientnet_lite0", "model_args.weights": "default",
        "seeds": seeds, "device": "cpu", "out": str(work / "runs" / name),
        "train.feature_cache_dir": str(work / "features")})
    tick = time.perf_counter()
    folder = run_experiment(cfg, progress=False, log=lines.append)
    summary = json.loads((folder / "summary.json").read_text())
    return {"test_acc": [r["test_acc"] for r in summary["runs"]], "num_train": summary["runs"][0]["num_train"],
            "num_test": summary["runs"][0]["num_test"], "leaked_test_images": summary["runs"][0].get("leaked_test_images"),
            "leak_warning": next((line for line in lines if line.startswith("warning:")), None),
            "wall_s": time.perf_counter() - tick}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    payload: dict = {"data": str(SHARED_DATA / "birds-subset50"), "flip": args.flip, "seeds": args.seeds}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        planted = planted_csv(work, args.flip, seed=0)
        payload["rows"] = planted["rows"]
        audits = {}
        for cache in ("cold", "warm"):
            tick = time.perf_counter()
            split = work / f"audited-{cache}.csv"
            folder = run_audit(str(work / "noisy.csv"), out=str(work / "audits"), write_split_to=str(split),
                               overrides={"train.feature_cache_dir": str(work / "features"), "device": "cpu"},
                               progress=False, log=lambda s: None)
            summary = json.loads((folder / "audit.json").read_text())
            audits[cache] = {"wall_s": time.perf_counter() - tick, "timing": summary["timing"], "folder": str(folder)}
            print(f"audit ({cache} cache): {audits[cache]['wall_s']:.1f}s", flush=True)
        payload["audit"] = {**score_audit(Path(audits["cold"]["folder"]), planted),
                            "counts": summary["counts"], "head": summary["head"],
                            "out_of_fold_accuracy": summary["out_of_fold_accuracy"],
                            "thresholds": summary["thresholds"], "written_split": summary["written_split"],
                            "cold_s": audits["cold"]["wall_s"], "warm_s": audits["warm"]["wall_s"],
                            "cold_timing": audits["cold"]["timing"], "warm_timing": audits["warm"]["timing"]}
        write_json("audit_birds", payload)
        payload["noisy"] = train(work / "noisy.csv", args.seeds, work, "noisy")
        write_json("audit_birds", payload)
        payload["audited"] = train(work / "audited-cold.csv", args.seeds, work, "audited")
        write_json("audit_birds", payload)
    a = payload["audit"]
    print(render_table(["figure", "value"], [
        ["planted label flips (train + validation)", str(a["planted_flips"])],
        ["flagged (train + validation) / of them planted", f"{a['label_issues_flagged_train_val']} / {a['flips_found']}"],
        ["precision / recall", f"{100 * a['precision']:.1f} % / {100 * a['recall']:.1f} %"],
        ["flagged in the test split (not planted: the data's own)", str(a["label_issues_flagged_test"])],
        ["planted leaks found", f"{a['leaks_found']} / {a['leaks_planted']} ({a['leaks_found_by_kind']})"],
        ["leak pairs not planted", str(a["leak_pairs_not_planted"])],
        ["audit time, cold / warm cache", f"{a['cold_s']:.0f} s / {a['warm_s']:.0f} s"],
        ["run's leak check on noisy.csv", str(payload["noisy"]["leaked_test_images"])],
        ["birdnet_v0 test accuracy, noisy", pm(payload["noisy"]["test_acc"], percent=True)],
        ["birdnet_v0 test accuracy, audited split", pm(payload["audited"]["test_acc"], percent=True)],
    ]))


if __name__ == "__main__":
    main()
