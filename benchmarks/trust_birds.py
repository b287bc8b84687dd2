"""Benchmark: can the probabilities be trusted? Calibration, conformal sets and 'unknown' on the shared birds.

Lite0 `birdnet_v0` (a frozen backbone and a head) and `birdnet_recipe` (probe, then fine-tune; shortened to 2
fine-tuning epochs on this CPU as in birds_lite0.py), 3 seeds each, on ../shared/data/birds-subset50:

1. calibration: NLL, Brier, ECE and adaptive ECE of the test split before and after the temperature each run
   fitted on its validation split (results.json's figures);
2. conformal sets: empirical test coverage and mean set size at 80/90/95 %, for APS, RAPS and LAC and for the whole
   validation split vs a held-out half of it (data.calibration_fraction 0.5), refitted here from each run's
   validation logits (the test split fits nothing);
3. 'unknown': AUROC and FPR at 95 % TPR of msp and energy, (a) far: 500 CIFAR-100 test images of
   ../shared/data/cifar100-subset25, (b) near: the same variants trained on 40 species, shown the test photos
   of the other 10 (`near_ood_data` copies the 40 species into the scratch folder; the shared data is only read).

    python benchmarks/trust_birds.py [--seeds 1 2 3] [--variants birdnet_v0 birdnet_recipe] [--skip-near]
                                     [--work DIR]   # a DIR holding finished runs: measured again, not retrained
"""
from __future__ import annotations

import argparse
import faulthandler
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import SHARED_DATA, write_json

from cnnlab.config import load_experiment
from cnnlab.fileio import read_json
from cnnlab.inference import load_trained
from cnnlab.inference.ood import split_logits
from cnnlab.inference.predict import predict
from cnnlab.inference.trained import run_data
from cnnlab.reporting.tables import pm, render_table
from cnnlab.studies import run_experiment
from cnnlab.trust import calibration, conformal
from cnnlab.trust.fitted import COVERAGES, fit_trust
from cnnlab.trust.rejection import ood_figures

SHORTENED = {"birdnet_recipe": {"train.phases.1.epochs": 2}}  # as benchmarks/birds_lite0.py
HELD_OUT = 10  # species left out of training for the near-OOD test
CALIBRATION_KEYS = ("nll", "brier", "ece", "adaptive_ece")


def near_ood_data(root: Path, birds: Path) -> tuple[Path, list[Path]]:
    """The lab's bird lists without their last HELD_OUT species (class folders copied: cnnlab refuses a list
    entry whose link leads out of its folder), and the test photos of those species (the foreign images)."""
    species = sorted(p.name for p in birds.iterdir() if p.is_dir())
    kept, held = set(species[:-HELD_OUT]), set(species[-HELD_OUT:])
    root.mkdir(parents=True, exist_ok=True)
    for name in kept:
        shutil.copytree(birds / name, root / name)
    foreign = []
    for listing in ("train.txt", "test.txt"):
        lines = (birds / listing).read_text().split()
        (root / listing).write_text("\n".join(line for line in lines if line.split("/")[0] in kept) + "\n")
        if listing == "test.txt":
            foreign = [birds / line for line in lines if line.split("/")[0] in held]
    return root, foreign


def near_ood_data_again(root: Path, birds: Path) -> tuple[Path, list[Path]]:
    """The dataset `near_ood_data` made before (kept in --work), and its foreign photos."""
    kept = {p.name for p in root.iterdir() if p.is_dir()}
    lines = (birds / "test.txt").read_text().split()
    return root, [birds / line for line in lines if line.split("/")[0] not in kept]


def cifar_images(folder: Path, count: int = 500) -> list[Path]:
    """The first `count` CIFAR-100 test images of the shared subset as PNG files (a temporary folder)."""
    images = np.load(SHARED_DATA / "cifar100-subset25" / "test.npz")["images"][:count]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:04d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def conformal_variants(val: tuple, test: tuple, seed: int) -> dict:
    """Test coverage and mean set size of APS / RAPS sets, calibrated on the whole validation split or half of it."""
    out = {}
    for score in ("aps", "raps", "lac"):
        for fraction in (0.0, 0.5):
            trust = fit_trust(*val, conformal_score=score, fraction=fraction, seed=seed)
            probs = calibration.softmax(test[0].numpy(), trust.temperature)
            for c in COVERAGES:
                found = conformal.coverage_figures(trust.sets(probs, c), test[1].numpy())
                out[f"{score}_f{fraction:g}_{round(100 * c)}"] = {"coverage": found["coverage"],
                                                                  "mean_size": found["mean_size"]}
    return out


def measure_runs(folder: Path, seeds: list[int], foreign: list[Path]) -> list[dict]:
    """Each seed's results.json figures, its conformal variants and its OOD figures against `foreign`."""
    rows = []
    for seed in seeds:
        run = folder / f"seed-{seed}"
        results = read_json(run / "results.json")
        # PyTorch, as the run computed the validation logits it fitted on (and OpenVINO's compiled models, three
        # of them alive at once here, crashed this script's process on this machine)
        trained = load_trained(run, engine="torch")
        splits = run_data(trained)
        tick = time.perf_counter()
        val, test = split_logits(trained, splits.val), split_logits(trained, splits.test)
        predictions, _ = predict([trained], foreign, progress=False)
        outside = torch.stack([p.logits for p in predictions])
        ood = {kind: ood_figures(trained.trust.scores(test[0], kind), trained.trust.scores(outside, kind))
               for kind in ("msp", "energy")}
        rows.append({"seed": seed, "test_acc": results["test_acc"], "temperature": results["temperature"],
                     **{f"test_{k}{s}": results[f"test_{k}{s}"] for k in CALIBRATION_KEYS
                        for s in ("_uncalibrated", "")},
                     **{f"test_{k}_{round(100 * c)}": results[f"test_{k}_{round(100 * c)}"]
                        for k in ("coverage", "set_size") for c in COVERAGES},
                     "test_accepted_share": results["test_accepted_share"],
                     "test_accepted_acc": results["test_accepted_acc"],
                     "conformal": conformal_variants(val, test, seed), "ood": ood,
                     "wall_time_s": results["wall_time_s"], "measure_s": time.perf_counter() - tick})
        print(f"  {folder.name} seed {seed}: measured in {time.perf_counter() - tick:.0f}s", flush=True)
    return rows


def main() -> None:
    faulthandler.enable()  # a crash in a native library says where
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--variants", nargs="+", default=["birdnet_v0", "birdnet_recipe"])
    ap.add_argument("--skip-near", action="store_true", help="only the 50-species runs (far OOD)")
    ap.add_argument("--work", default=None, help="keep runs and caches here (default: a temporary folder)")
    args = ap.parse_args()
    birds = SHARED_DATA / "birds-subset50"
    payload: dict = {"data": str(birds), "seeds": args.seeds, "protocol": SHORTENED, "far": {}, "near": {}}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        base = {"model_args.backbone": "efficientnet_lite0", "model_args.weights": "default", "seeds": args.seeds,
                "device": "cpu", "train.feature_cache_dir": str(work / "features")}
        print("preparing the foreign images", flush=True)
        far = cifar_images(work / "cifar-png")
        near_root, near = near_ood_data(work / "birds40", birds) if not (work / "birds40").exists() else \
            near_ood_data_again(work / "birds40", birds)
        settings = [("far", birds, far)] + ([] if args.skip_near else [("near", near_root, near)])
        for kind, data, foreign in settings:
            for name in args.variants:
                tick = time.perf_counter()
                print(f"{kind} {name}: training or reading the runs", flush=True)
                finished = sorted((work / kind / name).glob("*/summary.json"))
                if finished:  # --work with this variant's runs already there: measure them again
                    folder = finished[-1].parent
                else:
                    cfg = load_experiment(name, overrides={**base, **SHORTENED.get(name, {}), "data.path": str(data),
                                                           "out": str(work / kind)})
                    folder = run_experiment(cfg, progress=False, log=lambda s: None)
                rows = measure_runs(folder, args.seeds, foreign)
                payload[kind][name] = {"runs": rows, "foreign_images": len(foreign),
                                       "total_s": time.perf_counter() - tick}
                write_json("trust_birds", payload)  # partial results survive an interruption
                print(f"{kind} {name}: done in {time.perf_counter() - tick:.0f}s", flush=True)
    print_tables(payload)


def print_tables(payload: dict) -> None:
    def col(rows, key, percent):
        return pm([r[key] for r in rows], percent=percent)

    header = ["variant", "test acc", "T", "NLL before → after", "ECE before → after", "adaptive ECE before → after"]
    body = []
    for name, entry in payload["far"].items():
        r = entry["runs"]
        body.append([name, col(r, "test_acc", True), col(r, "temperature", False),
                     f"{col(r, 'test_nll_uncalibrated', False)} → {col(r, 'test_nll', False)}",
                     f"{col(r, 'test_ece_uncalibrated', True)} → {col(r, 'test_ece', True)}",
                     f"{col(r, 'test_adaptive_ece_uncalibrated', True)} → {col(r, 'test_adaptive_ece', True)}"])
    print(render_table(header, body))
    print()
    header = ["variant", "sets (calibrated on)", *[f"{round(100 * c)} %: coverage / size" for c in COVERAGES]]
    body = []
    for name, entry in payload["far"].items():
        for key, label in (("aps_f0", "APS, whole validation"), ("aps_f0.5", "APS, half of validation"),
                           ("raps_f0", "RAPS, whole validation"), ("raps_f0.5", "RAPS, half of validation"),
                           ("lac_f0", "LAC, whole validation"), ("lac_f0.5", "LAC, half of validation")):
            cells = []
            if f"{key}_80" not in entry["runs"][0]["conformal"]:
                continue
            for c in COVERAGES:
                found = [r["conformal"][f"{key}_{round(100 * c)}"] for r in entry["runs"]]
                cells.append(f"{pm([f['coverage'] for f in found], percent=True)} / "
                             f"{pm([f['mean_size'] for f in found], percent=False)}")
            body.append([name, label, *cells])
    print(render_table(header, body))
    print()
    header = ["setting", "variant", "score", "AUROC", "FPR at 95 % TPR"]
    body = []
    for kind in ("far", "near"):
        for name, entry in payload[kind].items():
            for score in ("msp", "energy"):
                rows = [r["ood"][score] for r in entry["runs"]]
                body.append([kind, name, score, pm([r["auroc"] for r in rows], percent=False),
                             pm([r["fpr_at_95_tpr"] for r in rows], percent=True)])
    print(render_table(header, body))


if __name__ == "__main__":
    main()
