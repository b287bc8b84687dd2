"""`cnnlab serve` under load: images/s and p50/p99 latency at 1, 8 and 32 concurrent clients.

    python benchmarks/serve_load.py [RUN_DIR] [--engine auto] [--requests 12]

RUN_DIR defaults to a fresh 1-seed `birdnet_v0` on EfficientNet-Lite0 trained on
../shared/data/birds-subset50 (cached features: about half a minute). The server runs as its own
process on 127.0.0.1; each client (a thread with its own connection) posts one bird photograph per
request, `--requests` times, the photographs taken in turn from the test list. Writes
results/serve_load.json and prints the table. Time it with nothing else running.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, wall, write_json  # noqa: E402

import httpx  # noqa: E402

from cnnlab.reporting.tables import render_table  # noqa: E402

BIRDS = SHARED_DATA / "birds-subset50"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run: Path, engine: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(["cnnlab", "serve", str(run), "--port", str(port), "--engine", engine],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server did not start: {process.stdout.read()}")


def load(url: str, photos: list[bytes], clients: int, requests: int) -> dict:
    def client(number: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=300) as session:
            for r in range(requests):
                photo = photos[(number * requests + r) % len(photos)]
                tick = time.perf_counter()
                response = session.post(f"{url}/v1/predict", files=[("file", ("bird.jpg", photo, "image/jpeg"))])
                latencies.append(time.perf_counter() - tick)
                if response.status_code != 200:
                    raise SystemExit(f"HTTP {response.status_code}: {response.text}")
        return latencies

    before = httpx.get(f"{url}/healthz").json()["batches"]
    tick = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(t for result in pool.map(client, range(clients)) for t in result)
    seconds = time.perf_counter() - tick
    batches = httpx.get(f"{url}/healthz").json()["batches"] - before
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"clients": clients, "requests": len(latencies), "img_s": len(latencies) / seconds,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * pick(0.99),
            "images_per_forward": len(latencies) / max(batches, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a run folder (default: train a 1-seed birdnet_v0 on Lite0)")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--requests", type=int, default=12, help="requests per client")
    args = parser.parse_args()
    if args.run:
        run = Path(args.run)
    else:
        out = Path(tempfile.mkdtemp(prefix="cnnlab-serve-"))
        wall(["cnnlab", "run", "birdnet_v0", "--backbone", "efficientnet_lite0", "--data", str(BIRDS), "--seeds", "1",
              "--out", str(out), "--no-progress"], env={**os.environ, "CNNLAB_CACHE": str(out / "cache")})
        run = next((out / "birdnet_v0").iterdir()) / "seed-1"
    photos = [(BIRDS / line).read_bytes() for line in (BIRDS / "test.txt").read_text().split()[:64]]
    process, url = _start(run, args.engine)
    try:
        model = httpx.get(f"{url}/v1/model").json()
        load(url, photos, 4, 2)  # warm-up
        rows = [load(url, photos, clients, args.requests) for clients in (1, 8, 32)]
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(render_table(["clients", "requests", "img/s", "p50 (ms)", "p99 (ms)", "images / forward"],
                       [[str(r["clients"]), str(r["requests"]), f"{r['img_s']:.1f}", f"{r['p50_ms']:.0f}",
                         f"{r['p99_ms']:.0f}", f"{r['images_per_forward']:.1f}"] for r in rows]))
    path = write_json("serve_load", {"run": str(run), "engine": model["engine"], "input_size": model["input_size"],
                                     "rows": rows, "command": "python benchmarks/serve_load.py"})
    print(f"\nengine {model['engine']}, {model['input_size'][1]} px; {path}")


if __name__ == "__main__":
    main()
