"""Beyond the lab: the from-scratch cifar_recipe on the real 25-class subset, against BaseNet and BaseNet++.

    python benchmarks/cifar_recipe.py --run                # trains cifar_recipe, 3 seeds (about 40 min each here)
    python benchmarks/cifar_recipe.py --folder RUNS/cifar_recipe/<stamp> [--basenet RUNS/basenet/<stamp>]
    python benchmarks/cifar_recipe.py --folder RUNS/cifar_recipe/<stamp of seed 3> --merge   # add seeds to the record

Reads the experiment folder(s) only (experiment.yaml, metrics.csv, results.json): for each seed
the validation accuracy against the wall time spent training (results/cifar_recipe_curve.png),
the test accuracy, wall time and median epoch; then a table with the lab's figures and every
recipe recorded before. A run that was paused or shared the machine has inflated epochs: the
table gives the time a run takes on a quiet machine as the pace of its fastest quarter of epochs
(25th percentile) × epochs, and the curve counts an epoch over twice its run's median at the
median. Writes results/cifar_recipe.json, one record per recipe: the preset
of the cnnlab version that recorded it, and the keys a run changed from it, named.
With --merge, the seeds recorded before under the same recipe that --folder lacks stay in the
record (a seed trained in a later session joins the earlier ones; a seed given again replaces
its entry; a folder of another recipe is refused, see _records.py).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from _common import RESULTS, SHARED_DATA, write_json
from _records import experiment_record, merge_records, named_with_precision, precision

from cnnlab.config import flat_config, load_experiment
from cnnlab.fileio import read_json
from cnnlab.reference import lab_reference
from cnnlab.reporting.metrics import read_metrics
from cnnlab.reporting.tables import render_table
from cnnlab.studies.experiment import protocol_differences
from cnnlab.version import __version__

GOAL = 0.85  # issue 12: mean of 3 seeds, each run at most 45 minutes on the 2-core CPU
BUDGET_S = 45 * 60
OUT = RESULTS / "cifar_recipe.json"


def recipe_name(cfg) -> str:
    """The preset of this cnnlab version, plus the keys this run changed (key=value, sorted):
    "cifar_recipe (0.4 preset) + train.epochs=45". The version keeps a name true after the preset changes."""
    changed = protocol_differences(cfg, load_experiment("cifar_recipe"))
    flat = flat_config(cfg)
    base = f"cifar_recipe ({'.'.join(__version__.split('.')[:2])} preset)"
    return base + (" + " + ", ".join(f"{k}={flat.get(k)}" for k in changed) if changed else "")


def seed_extra(seed_dir: Path, results: dict) -> dict:
    return {"quiet_wall_s": quiet_epoch_s(seed_dir) * results["epochs_trained"], "curve": seed_curve(seed_dir)}


def seed_curve(seed_dir: Path) -> list[tuple[float, float]]:
    """(minutes of training so far, validation accuracy) after each epoch."""
    spent, points = 0.0, []
    for row in read_metrics(seed_dir / "metrics.csv"):
        spent += row["epoch_time_s"]
        points.append((spent / 60, row["val_acc"]))
    return points


def quiet_epoch_s(seed_dir: Path) -> float:
    times = [row["epoch_time_s"] for row in read_metrics(seed_dir / "metrics.csv")]
    return statistics.quantiles(times, n=4)[0] if len(times) >= 4 else statistics.median(times)


def unpaused(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The curve with every epoch longer than twice its run's median epoch (the run was stopped, or
    shared the machine, during it) counted at the median, so a pause does not draw a flat stretch."""
    durations = [b[0] - a[0] for a, b in zip([(0.0, 0.0), *curve], curve)]
    median = statistics.median(durations)
    spent, points = 0.0, []
    for duration, (_, accuracy) in zip(durations, curve):
        spent += duration if duration <= 2 * median else median
        points.append((spent, accuracy))
    return points


def plot(records: dict[str, dict], path: Path, lab: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for index, (name, record) in enumerate(records.items()):
        for seed in record["seeds"]:
            points = unpaused(seed["curve"])
            ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker=".", ms=3, lw=1,
                    color=f"C{index}", alpha=0.85, label=name if seed is record["seeds"][0] else None)
    for name, value in lab.items():
        ax.axhline(100 * value, ls="--", lw=1, color="grey")
        ax.text(0.5, 100 * value + 0.6, name, fontsize=8, color="dimgrey")
    ax.axhline(100 * GOAL, ls=":", color="tab:red")
    ax.text(0.5, 100 * GOAL + 0.6, "goal 85 % (test)", fontsize=8, color="tab:red")
    ax.axvline(BUDGET_S / 60, ls=":", color="black", lw=1)
    ax.set_xlabel("training time on a 2-core CPU (minutes, validation included; fp32 runs: AVX2 EPYC, bf16 runs:\n"
                  "EPYC with native bf16; an epoch over twice its run's median, a pause, counts at the median)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("cifar_recipe on the 25-class CIFAR-100 subset: accuracy against wall time\n(one line a seed)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def table_row(name: str, record: dict) -> list[str]:
    seeds = len(record["seeds"])
    accuracy = (f"{100 * record['mean_test_acc']:.2f} ± {100 * record['std_test_acc']:.2f} %" if seeds > 1
                else f"{100 * record['mean_test_acc']:.2f} % (1 run)")
    quiet = statistics.median(s["quiet_wall_s"] for s in record["seeds"]) / 60 if "quiet_wall_s" in record["seeds"][0] \
        else statistics.median(s["wall_time_s"] for s in record["seeds"]) / 60
    vals = [s["final_val_acc"] for s in record["seeds"] if s.get("final_val_acc") is not None]
    return [f"{name} ({seeds} seed{'s' if seeds > 1 else ''}, {record['epochs']} epochs)",
            f"{100 * statistics.mean(vals):.2f} %" if vals else "", accuracy, f"{quiet:.1f}",
            ", ".join(f"{100 * s['test_acc']:.2f}" for s in record["seeds"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="train cifar_recipe (3 seeds) first, into --out")
    ap.add_argument("--out", default="runs")
    ap.add_argument("--folder", type=Path, help="a finished cifar_recipe experiment folder")
    ap.add_argument("--basenet", type=Path, help="a finished BaseNet experiment folder on the same data")
    ap.add_argument("--data", default=str(SHARED_DATA / "cifar100-subset25"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the seeds of the same recipe recorded in results/cifar_recipe.json that --folder lacks")
    args = ap.parse_args()
    if args.run:
        subprocess.run([sys.executable, "-m", "cnnlab", "run", "cifar_recipe", "--data", args.data, "--out", args.out,
                        "--no-progress"], check=True)
        args.folder = sorted((Path(args.out) / "cifar_recipe").iterdir())[-1]
    if args.folder is None:
        ap.error("give --run or --folder")
    cfg, recipe = experiment_record(args.folder, seed_extra)
    name, recipe = named_with_precision(recipe_name(cfg), recipe), {**recipe, "cnnlab": __version__}
    recorded = read_json(OUT) if OUT.is_file() else {}
    records = dict(recorded.get("records", {}))
    # The same recipe recorded under an earlier version's name keeps that name (its protocol and precision decide)
    if name not in records:
        name = next((key for key, value in records.items()
                     if value.get("protocol") == recipe["protocol"] and precision(value) == precision(recipe)), name)
    records[name] = merge_records(records[name], recipe) if args.merge and name in records else recipe
    lab = lab_reference("basenet_pp")["mean_test_acc"], lab_reference("basenet")["mean_test_acc"]
    plot(records, RESULTS / "cifar_recipe_curve.png", {"lab BaseNet++ (test)": lab[0], "lab BaseNet (test)": lab[1]})

    rows = [["lab BaseNet (Keras, 3 runs)", "", f"{100 * lab[1]:.2f} %", "", ""],
            ["lab BaseNet++ (Keras, 3 runs)", "", f"{100 * lab[0]:.2f} %", "", ""]]
    payload = {"goal_test_acc": GOAL, "budget_s": BUDGET_S, "records": records}
    base = experiment_record(args.basenet)[1] if args.basenet else recorded.get("basenet")
    if base:
        payload["basenet"] = base
        rows.append(table_row("cnnlab basenet", base))
    rows += [table_row(f"cnnlab {key}", value) for key, value in records.items()]
    if recipe["unfinished"]:
        print(f"unfinished in {args.folder}: {', '.join(recipe['unfinished'])} (cnnlab resume {args.folder})")
    current = records[name]
    payload["meets_goal"] = {key: value["mean_test_acc"] >= GOAL and len(value["seeds"]) >= 3
                             for key, value in records.items()}
    payload["within_budget"] = {key: max(s["quiet_wall_s"] for s in value["seeds"]) <= BUDGET_S
                                for key, value in records.items()}
    print(render_table(["", "validation (last epoch)", "test accuracy", "minutes a run (quiet estimate)", "each seed"],
                       rows))
    print(f"{name}: goal {100 * GOAL:.0f} %: {'met' if payload['meets_goal'][name] else 'not met'} "
          f"({100 * current['mean_test_acc']:.2f} % over {len(current['seeds'])} seeds); {BUDGET_S // 60} min a run: "
          f"{'within' if payload['within_budget'][name] else 'over'}")
    print(f"written {write_json('cifar_recipe', payload)} and {RESULTS / 'cifar_recipe_curve.png'}")


if __name__ == "__main__":
    main()
