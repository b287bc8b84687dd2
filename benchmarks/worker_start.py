"""What a streamed split's decoding workers cost to start, once a process has loaded OpenVINO.

    python benchmarks/worker_start.py [--images 40] [--loaders 5]

A streamed set builds one DataLoader per pass (a split, an epoch), and its workers do not persist.
They start by fork, unless OpenVINO is loaded (its oneTBB pool makes fork unsafe): then from a
forkserver (data/streaming.worker_context). Three cases, each in a process of its own, one after the
other: fork; forkserver with nothing preloaded (cnnlab ≤ 0.14: each worker imports torch itself);
forkserver with torch and cnnlab's decoder preloaded in the server (now). Each decodes --images
bird photos at 64 px with one worker, --loaders times; the first pass (which starts the server) and
the median of the others are reported. Prints a table and writes results/worker_start.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import SHARED_DATA, write_json

CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
import torch

def main(case, images, loaders):
    if case != "fork":
        import openvino  # noqa: F401  (loaded: workers now start from a forkserver)
    from cnnlab.data import streaming
    if case == "forkserver, nothing preloaded":
        streaming.FORKSERVER_PRELOAD = []
    paths = sorted(Path(sys.argv[4]).rglob("*.jpg"))[:images]
    stream = streaming.StreamingSet(paths, torch.zeros(len(paths), dtype=torch.long), size=64, num_workers=1)
    times = []
    for _ in range(loaders):
        start = time.perf_counter()
        assert sum(len(x) for x, _ in stream.batches(16)) == len(paths)
        times.append(time.perf_counter() - start)
    print(json.dumps({"context": streaming.worker_context(), "first_s": times[0],
                      "later_median_s": statistics.median(times[1:]), "passes_s": times}))

if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""

CASES = ("fork", "forkserver, nothing preloaded", "forkserver, torch preloaded")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--loaders", type=int, default=5)
    args = ap.parse_args()
    birds = SHARED_DATA / "birds-subset50"
    rows = {}
    for case in CASES:
        done = subprocess.run([sys.executable, "-c", CHILD, case, str(args.images), str(args.loaders), str(birds)],
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
        rows[case] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'case':34} {'context':>11} {'first pass s':>13} {'later passes s (median)':>24}")
    for case, row in rows.items():
        print(f"{case:34} {str(row['context']):>11} {row['first_s']:13.2f} {row['later_median_s']:24.2f}")
    path = write_json("worker_start", {"images": args.images, "loaders": args.loaders, "workers": 1, "cases": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
