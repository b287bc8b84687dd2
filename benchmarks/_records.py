"""One record of a finished experiment folder, for the benchmarks that read runs (long_runs, cifar_recipe).

A record is the experiment's protocol (its configuration less the keys that only change speed
or location) and one entry per finished seed; the mean and std are computed from the entries.
A long run often finishes its seeds in different sessions and folders, so `merge_records`
joins a folder's seeds to an earlier record of the same protocol — and refuses, naming the
keys, when the two are not the same recipe.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable

from cnnlab.config import ExperimentConfig, load_experiment
from cnnlab.studies.experiment import differing_keys, protocol
from cnnlab.studies.layout import unit_names

SeedExtra = Callable[[Path, dict], dict]  # (seed folder, its results.json) → more fields for its entry


def experiment_record(folder: Path, extra: SeedExtra | None = None) -> tuple[ExperimentConfig, dict]:
    """The experiment's configuration and record; seeds still training are listed as unfinished."""
    if not (folder / "experiment.yaml").is_file():
        raise SystemExit(f"{folder}: not an experiment folder (no experiment.yaml)")
    cfg = load_experiment(folder / "experiment.yaml")
    seeds, unfinished = [], []
    for unit in unit_names(cfg):
        path = folder / unit / "results.json"
        if not path.is_file():
            unfinished.append(unit)
            continue
        r = json.loads(path.read_text())
        entry = {"unit": unit, "folder": str(folder.resolve()), "test_acc": r["test_acc"], "test_loss": r["test_loss"],
                 "final_val_acc": r.get("final_val_acc"), "epochs": r["epochs_trained"],
                 "median_epoch_s": r["median_epoch_time_s"], "wall_time_s": r["wall_time_s"], "device": r["device"],
                 "precision": r.get("precision")}
        seeds.append({**entry, **(extra(folder / unit, r) if extra else {})})
    if not seeds:
        raise SystemExit(f"{folder}: no finished run yet ({', '.join(unfinished)} unfinished)")
    return cfg, with_summary({"experiment": cfg.experiment_name, "epochs": cfg.train.total_epochs,
                              "protocol": protocol(cfg), "seeds": seeds, "unfinished": unfinished})


def precision(record: dict) -> str:
    """fp32, bf16, or "mixed" over a record's seeds (records of cnnlab ≤ 0.7 name none: all fp32)."""
    kinds = {seed.get("precision") or "fp32" for seed in record["seeds"]}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def named_with_precision(name: str, record: dict) -> str:
    """`name`, plus the record's precision unless fp32 ("basenet_pp in bf16"): protocols leave precision
    out (it changes speed, not the recipe), but a record holds one precision, so its key names it."""
    kind = precision(record)
    return name if kind == "fp32" else f"{name} in {kind}"


def with_summary(record: dict) -> dict:
    """`record` with its folders, mean and std recomputed from its seed entries."""
    accs = [s["test_acc"] for s in record["seeds"]]
    return {**record, "folders": sorted({s["folder"] for s in record["seeds"]}),
            "mean_test_acc": statistics.mean(accs), "std_test_acc": statistics.stdev(accs) if len(accs) > 1 else None}


def merge_records(earlier: dict, new: dict) -> dict:
    """`new` with the seeds of `earlier` it lacks (a seed in both keeps `new`'s entry); same protocol only."""
    if "protocol" not in earlier:  # recorded before records kept their protocol (cnnlab 0.4): the length only
        if earlier["epochs"] != new["epochs"]:
            raise SystemExit(f"--merge: the record has {earlier['epochs']} epochs, the folder {new['epochs']}")
    elif earlier["protocol"] != new["protocol"]:
        a, b = earlier["protocol"], new["protocol"]
        keys = differing_keys(a, b)
        raise SystemExit("--merge: the recorded runs and this folder are not the same recipe; they differ in "
                         + ", ".join(f"{k} ({a.get(k)!r} vs {b.get(k)!r})" for k in keys))
    if precision(earlier) != precision(new):  # bf16 changes the figures a little: a record holds one precision
        raise SystemExit(f"--merge: the recorded runs are {precision(earlier)}, this folder's {precision(new)}; "
                         "they are recorded apart (the key names a precision other than fp32)")
    have = {s["unit"] for s in new["seeds"]}
    seeds = sorted(new["seeds"] + [s for s in earlier["seeds"] if s["unit"] not in have],
                   key=lambda s: int(s["unit"].split("-")[1]))
    done = {s["unit"] for s in seeds}
    unfinished = sorted(set(earlier["unfinished"] + new["unfinished"]) - done)
    return with_summary({**new, "seeds": seeds, "unfinished": unfinished})
