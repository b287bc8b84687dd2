"""Inference engines on the birds: feature extraction and predict img/s, a cold V0 run, int8 against fp32.

    python benchmarks/engines.py [--quick]

1. **Feature extraction** of EfficientNet-Lite0 (224 px, batch 32, this machine's threads) on 256
   decoded bird images, per engine and precision: torch as the trainer ran it before engines
   (channels-last, the run's precision), OpenVINO, ONNX Runtime (fp32 only: it has no bf16 CPU kernels).
2. **`cnnlab predict`** of all 2,949 photographs with a trained V0 (whole command, decoding
   included), per engine, and the network alone (`TrainedModel.batch_probabilities` on decoded batches).
3. **A cold `cnnlab run birdnet_v0`** on the 50 species, 3 seeds, empty feature cache: the default
   engine (`auto`) against `--engine torch`, whole processes.
4. **int8**: `cnnlab export --int8` of that run (300 training images calibrate), its test accuracy,
   top-1 agreement and speed against fp32 (ONNX Runtime), and the int8 graph on OpenVINO.

Writes results/engines.json and prints the tables. Time it with nothing else running.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine, wall, write_json  # noqa: E402

import torch  # noqa: E402

from cnnlab.config import DataConfig  # noqa: E402
from cnnlab.data.loading import load_splits  # noqa: E402
from cnnlab.reporting.tables import render_table  # noqa: E402

BIRDS = SHARED_DATA / "birds-subset50"


def _median_rate(run, images: int, repeats: int) -> float:
    run()  # warm-up: compilation, first allocations
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    return images / statistics.median(times)


def feature_speeds(count: int, repeats: int) -> list[dict]:
    from cnnlab.data.preprocess import BatchPreprocessor
    from cnnlab.config import PreprocessConfig
    from cnnlab.models import create_model
    from cnnlab.training.allocator import keep_freed_memory
    from cnnlab.engines import compile_module
    from cnnlab.training.loop import autocast_context

    keep_freed_memory()
    splits = load_splits(DataConfig(path=str(BIRDS), image_size=224, resize="stretch", workers=0))
    images = splits.train.subset(torch.arange(count)).cache_in_memory().images
    model = create_model("birdnet_v0", num_classes=50, backbone="efficientnet_lite0").eval()
    prep = BatchPreprocessor(PreprocessConfig(normalize="weights"), torch.tensor(model.preprocessing.mean),
                             torch.tensor(model.preprocessing.std))
    batches = [prep(images[i:i + 32], train=False) for i in range(0, count, 32)]
    rows = []
    for precision in ("bf16", "fp32"):
        bf16 = precision == "bf16"
        channels_last = model.to(memory_format=torch.channels_last)

        def torch_path():
            with torch.no_grad(), autocast_context(torch.device("cpu"), bf16):
                for x in batches:
                    channels_last.forward_features(x.contiguous(memory_format=torch.channels_last)).float()

        rows.append({"what": "features", "engine": "torch (channels-last, the trainer's path)", "precision": precision,
                     "img_s": _median_rate(torch_path, count, repeats)})
        model.to(memory_format=torch.contiguous_format)
        for engine in ("openvino", "onnxruntime"):
            if engine == "onnxruntime" and bf16:
                continue
            forward = compile_module(model.forward_features, batches[0], engine, precision=precision)
            rows.append({"what": "features", "engine": engine, "precision": precision,
                         "img_s": _median_rate(lambda: [forward(x) for x in batches], count, repeats)})
    nchw = model.to(memory_format=torch.contiguous_format)

    def nchw_path():
        with torch.no_grad():
            for x in batches:
                nchw.forward_features(x)

    rows.append({"what": "features", "engine": "torch NCHW (no channels-last)", "precision": "fp32",
                 "img_s": _median_rate(nchw_path, count, repeats)})
    return rows


def cold_runs(out: Path, seeds: list[str]) -> tuple[list[dict], Path]:
    rows, folders = [], {}
    for engine in ("auto", "torch"):
        env = {**os.environ, "CNNLAB_CACHE": str(out / f"cache-{engine}")}  # cold: features really extracted
        command = ["cnnlab", "run", "birdnet_v0", "--backbone", "efficientnet_lite0", "--data", str(BIRDS),
                   "--seeds", *seeds, "--engine", engine, "--out", str(out / engine), "--no-progress"]
        seconds = wall(command, env=env)
        folder = next((out / engine / "birdnet_v0").iterdir())
        runs = json.loads((folder / "summary.json").read_text())["runs"]
        folders[engine] = folder
        rows.append({"engine": runs[0]["engine"], "asked": engine, "wall_s": seconds,
                     "test_acc": [r["test_acc"] for r in runs], "one_off_s": runs[0]["one_off_time_s"],
                     "precision": runs[0]["precision"]})
    return rows, folders["torch"]


def predict_speeds(folder: Path, out: Path) -> list[dict]:
    from cnnlab.inference import load_trained

    rows = []
    for engine in ("torch", "openvino", "onnxruntime"):
        csv = out / f"predict-{engine}.csv"
        seconds = wall(["cnnlab", "predict", str(folder), str(BIRDS), "--seed", "1", "--engine", engine,
                        "--out", str(csv), "--no-progress"])
        count = len(csv.read_text().splitlines()) - 1
        trained = load_trained(folder, seed=1, engine=engine)
        images = torch.randint(0, 256, (64, *trained.input_size), dtype=torch.uint8)
        rate = _median_rate(lambda: [trained.batch_probabilities(images[i:i + 32]) for i in (0, 32)], 64, 3)
        rows.append({"what": "predict", "engine": engine, "images": count, "command_s": seconds,
                     "command_img_s": count / seconds, "network_img_s": rate})
    return rows


def int8_figures(folder: Path, out: Path) -> dict:
    from cnnlab.inference import load_trained
    from cnnlab.inference.export import export_model

    report = export_model(load_trained(folder, seed=1), out / "v0-int8.onnx", int8=True, log=print)
    graph = load_trained(out / "v0-int8.onnx", engine="openvino")
    images = torch.randint(0, 256, (64, *graph.input_size), dtype=torch.uint8)
    report["int8_openvino_img_s"] = _median_rate(lambda: [graph.batch_probabilities(images[i:i + 32]) for i in (0, 32)],
                                                 64, 3)
    fp32 = load_trained(folder, seed=1, engine="openvino")
    report["fp32_openvino_img_s"] = _median_rate(lambda: [fp32.batch_probabilities(images[i:i + 32]) for i in (0, 32)],
                                                 64, 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer images (a smoke run, not a figure)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cnnlab-engines-"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    # Read before any engine starts its threads: a subprocess spawned (platform's probes) by a process
    # holding OpenVINO's thread pool crashed once here (SIGSEGV in vfork), never under gdb.
    here = machine()
    features = feature_speeds(64 if args.quick else 256, 1 if args.quick else 3)
    base = next(r["img_s"] for r in features if r["engine"].startswith("torch (") and r["precision"] == "bf16")
    print(render_table(["engine", "precision", "img/s", "× torch bf16"],
                       [[r["engine"], r["precision"], f"{r['img_s']:.1f}", f"{r['img_s'] / base:.2f}"] for r in features]))
    cold, folder = cold_runs(out, ["1"] if args.quick else ["1", "2", "3"])
    print(render_table(["--engine", "resolved", "precision", "whole process (s)", "features (s)", "test accuracy"],
                       [[r["asked"], r["engine"], r["precision"], f"{r['wall_s']:.1f}", f"{r['one_off_s']:.1f}",
                         ", ".join(f"{100 * a:.2f}" for a in r["test_acc"])] for r in cold]))
    predicts = predict_speeds(folder, out)
    print(render_table(["predict engine", "images", "command (s)", "command img/s", "network img/s"],
                       [[r["engine"], str(r["images"]), f"{r['command_s']:.1f}", f"{r['command_img_s']:.1f}",
                         f"{r['network_img_s']:.1f}"] for r in predicts]))
    int8 = int8_figures(folder, out)
    test = int8["test"]
    print(render_table(["graph", "test accuracy", "agreement with fp32", "ORT img/s", "OpenVINO img/s"], [
        ["fp32", f"{100 * test['fp32']['test_acc']:.2f} %", "—", f"{test['fp32']['img_s']:.1f}",
         f"{int8['fp32_openvino_img_s']:.1f}"],
        ["int8", f"{100 * test['int8']['test_acc']:.2f} %", f"{100 * test['int8']['agreement_with_fp32']:.2f} %",
         f"{test['int8']['img_s']:.1f}", f"{int8['int8_openvino_img_s']:.1f}"]]))
    path = write_json("engines" if not args.quick else "engines_quick",
                      {"machine": here, "features": features, "cold_v0": cold, "predict": predicts, "int8": int8,
                       "threads": torch.get_num_threads()})
    print(f"\n{path}")


if __name__ == "__main__":
    main()
