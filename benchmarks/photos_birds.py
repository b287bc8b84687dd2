"""Benchmark: "my own photos" end to end — train on a plain class folder, predict, export.

Data: ../shared/data/birds-subset50 read as a plain folder of class folders (`--source
classfolder`: its list files are ignored), so cnnlab draws the stratified 70/10/20 split.
Model: `birdnet_recipe` on EfficientNet-Lite0 (offline ImageNet weights), fp32 (`--amp bf16` only
where the CPU has native bf16: emulated, it is several times slower).
CPU-sized protocol: the probe phase keeps its 15 epochs on cached features, the fine-tuning
phase is shortened to `--finetune-epochs` (the preset has 5).

Measures: test accuracy, wall time; `cnnlab predict` throughput (images/s, decode included);
ONNX export time; ONNX Runtime vs PyTorch CPU latency (median of repeated calls) at batch 1 and 32.

    python benchmarks/photos_birds.py [--seeds 1] [--finetune-epochs 1]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import SHARED_DATA, write_json

from cnnlab.config import load_experiment
from cnnlab.fileio import read_json
from cnnlab.inference import load_trained
from cnnlab.inference.export import export_onnx
from cnnlab.inference.predict import predict
from cnnlab.reporting.tables import render_table
from cnnlab.studies import run_experiment


def median_latency(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--amp", default="auto", help="auto: fp32 on the CPU; bf16 pays only on CPUs with native bf16")
    ap.add_argument("--data", default=str(SHARED_DATA / "birds-subset50"))
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="cnnlab-photos-"))
    cfg = load_experiment("birdnet_recipe", overrides={
        "data.path": args.data, "data.source": "classfolder", "model_args.backbone": "efficientnet_lite0",
        "train.amp": args.amp, "train.phases.1.epochs": args.finetune_epochs, "seeds": args.seeds,
        "train.feature_cache_dir": str(out / "features"), "out": str(out / "runs")})
    tick = time.perf_counter()
    folder = run_experiment(cfg, progress=False, log=lambda line: print(line, flush=True))
    train_s = time.perf_counter() - tick
    summary = read_json(folder / "summary.json")

    run_dir = folder / f"seed-{args.seeds[0]}"
    trained = load_trained(run_dir)
    split = [line.split(",") for line in (folder / "split.csv").read_text().splitlines()[1:]]
    test_files = [Path(args.data) / path for path, _, which in split if which == "test"]
    tick = time.perf_counter()
    predictions, errors = predict([trained], test_files, batch_size=64, progress=False)
    predict_s = time.perf_counter() - tick
    right = sum(trained.class_names[int(p.probabilities.argmax())] == p.path.parent.name for p in predictions)

    report = export_onnx(trained, out / "model.onnx")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    latency = {}
    for batch in (1, 32):
        x = torch.rand(batch, *trained.input_size)
        with torch.no_grad():
            latency[f"pytorch_b{batch}_s"] = median_latency(lambda: trained.model(x), 20 if batch == 1 else 5)
        feed = {session.get_inputs()[0].name: x.numpy()}
        latency[f"onnxruntime_b{batch}_s"] = median_latency(lambda: session.run(None, feed), 20 if batch == 1 else 5)

    payload = {
        "protocol": {"data": "birds-subset50 as a class folder (70/10/20 stratified split, seed 0)",
                     "model": f"birdnet_recipe, efficientnet_lite0, amp {args.amp}", "probe_epochs": 15,
                     "finetune_epochs": args.finetune_epochs, "seeds": args.seeds},
        "test_acc": [r["test_acc"] for r in summary["runs"]], "test_acc_mean": summary["test_acc_mean"],
        "num_train": summary["runs"][0]["num_train"], "num_val": summary["runs"][0]["num_val"],
        "num_test": summary["runs"][0]["num_test"], "train_wall_s": train_s,
        "predict": {"images": len(predictions), "unreadable": len(errors), "seconds": predict_s,
                    "images_per_s": len(predictions) / predict_s, "top1_acc": right / len(predictions)},
        "export": {"seconds": report["export_s"], "max_abs_diff": report["max_abs_diff"]},
        "latency": latency,
    }
    path = write_json("photos_birds", payload)
    rows = [["test accuracy (mean of seeds)", f"{100 * summary['test_acc_mean']:.2f} %"],
            ["train / val / test images", f"{payload['num_train']} / {payload['num_val']} / {payload['num_test']}"],
            ["training wall time", f"{train_s:.0f} s"],
            ["predict throughput (decode + model)", f"{payload['predict']['images_per_s']:.1f} img/s"],
            ["predict top-1 on the test split", f"{100 * payload['predict']['top1_acc']:.2f} %"],
            ["ONNX export", f"{report['export_s']:.1f} s, max |Δ| {max(report['max_abs_diff'].values()):.1e}"],
            *[[f"latency {k}", f"{1000 * v:.1f} ms"] for k, v in latency.items()]]
    print(render_table(["figure", "value"], rows))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
