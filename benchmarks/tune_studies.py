"""Two honest tuning studies on ../shared/data, each ending in tuned against untuned on test over 3 seeds.

    python benchmarks/tune_studies.py [linear_probe] [cifar_recipe] [--out RUNS]

- **linear_probe**: `birdnet_v0` on EfficientNet-Lite0 (the birds), its learning rate, epochs and
  label smoothing (spaces/linear_probe.yaml), 40 trials, median pruner; every trial trains on the
  cached features (seconds).
- **cifar_recipe**: its learning rate and weight decay (spaces/cifar_recipe.yaml) on a schedule
  shortened to 4 epochs (of 40), ASHA pruning, 8 trials; the final comparison keeps the 4 epochs for both.

Whatever the sign of the gain, it is recorded: results/tune_studies.json (one entry per study:
the command, the trials' states, the best parameters, final.json's figures, the wall time) and a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_DATA, wall, write_json  # noqa: E402

from cnnlab.reporting.tables import pm, render_table  # noqa: E402

HERE = Path(__file__).resolve().parent
STUDIES = {
    "linear_probe": {"experiment": "birdnet_v0", "space": HERE / "spaces" / "linear_probe.yaml", "trials": 40,
                     "pruner": "median", "data": SHARED_DATA / "birds-subset50",
                     "set": ["model_args.backbone=efficientnet_lite0"]},
    "cifar_recipe": {"experiment": "cifar_recipe", "space": HERE / "spaces" / "cifar_recipe.yaml", "trials": 8,
                     "pruner": "asha", "data": SHARED_DATA / "cifar100-subset25", "set": ["train.epochs=4"]},
}


def run(name: str, out: Path) -> dict:
    spec = STUDIES[name]
    command = ["cnnlab", "tune", spec["experiment"], "--space", str(spec["space"]), "--trials", str(spec["trials"]),
               "--pruner", spec["pruner"], "--data", str(spec["data"]), "--out", str(out), "--no-progress",
               *[item for s in spec["set"] for item in ("--set", s)]]
    started = time.strftime("%Y-%m-%d %H:%M")
    seconds = wall(command, env={**os.environ, "CNNLAB_CACHE": str(out / "cache")})
    folder = out / "tune" / f"{spec['experiment']}-{spec['space'].stem}"
    final = json.loads((folder / "final.json").read_text())
    states = [line.split(",")[1] for line in (folder / "trials.csv").read_text().splitlines()[1:]]
    shown = " ".join(command).replace(str(out), "RUNS").replace(str(SHARED_DATA), "../shared/data")
    return {"command": shown, "started": started, "wall_s": seconds, "trials": {s: states.count(s) for s in set(states)},
            **final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=list(STUDIES), choices=list(STUDIES))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cnnlab-tune-"))
    path = RESULTS / "tune_studies.json"
    kept = json.loads(path.read_text())["studies"] if path.is_file() else {}
    for name in args.studies:
        kept[name] = run(name, out)
        write_json("tune_studies", {"studies": kept})
    rows = []
    for name, r in kept.items():
        p = "—" if r["p_value"] is None else f"{r['p_value']:.3f}"
        rows.append([name, f"{sum(r['trials'].values())} ({r['trials'].get('pruned', 0)} pruned)",
                     f"{r['best_value']:.4f}", pm(r["preset"]["test_acc"], percent=True),
                     pm(r["tuned"]["test_acc"], percent=True), f"{100 * r['gain']:+.2f}", p,
                     f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]", f"{r['wall_s'] / 60:.1f}"])
    print(render_table(["study", "trials", "best val", "preset test", "tuned test", "gain (pts)", "Welch p",
                        "95 % CI", "min"], rows))
    for name, r in kept.items():
        print(f"{name}: best {r['best_params']}")
    print(path)


if __name__ == "__main__":
    main()
