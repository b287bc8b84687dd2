"""`cnnlab probe --backbones A B C --data PATH`: which backbone for my photos, before any fine-tuning.

Each backbone is frozen and read once (features cached), then a linear probe — the lab's V0 head —
trains on its features over the seeds, as `cnnlab run birdnet_v0 --backbone A` would, with the
images sized as that backbone's weights expect (`data.image_size: 0`, resize, interpolation and
mean/std from the weights) unless options say otherwise; `--classic logreg` adds scikit-learn
heads on the same features. One table: validation and test accuracy (mean ± std), the ImageNet top-1
the weights state, parameters, multiply-adds at the input size and feature extraction speed here.

The recommendation is chosen on validation only — the best mean validation accuracy, ties (within
half a validation image) to the fewer multiply-adds — so the test column stays an honest estimate
of the chosen backbone, never a criterion.

    runs/probe/<time>-<id>/<backbone>/<time>-<id>/...   one experiment folder each
                          /probe.json, probe.md, compare.json   the table (compare.json: the report's page)
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from cnnlab.config import ExperimentConfig, load_experiment, model_spec
from cnnlab.errors import ConfigError
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir
from cnnlab.models.backbones import get_backbone, resolve_weights
from cnnlab.reporting.tables import headline_figure, mean_std, pm, render_table
from cnnlab.studies.classic import run_classic_heads
from cnnlab.studies.experiment import data_key, load_data, new_experiment_dir, run_units
from cnnlab.studies.preflight import check_experiment
from cnnlab.training.features import compute_features
from cnnlab.training.learner import build_model, fit_preprocess
from cnnlab.training.runtime import Runtime

Log = Callable[[str], None]
PROBE_EXPERIMENT = "birdnet_v0"
SPEED_IMAGES = 128  # decoded images timed for the backbone's speed (the cached pass may be a hit)


def probe_config(backbone: str, overrides: dict[str, Any], origins: dict[str, str] | None) -> ExperimentConfig:
    """The V0 linear probe on `backbone`, its images as its weights expect unless the options say."""
    sized = {"data.image_size": 0, "data.resize": "auto", "data.interpolation": "auto"}
    cfg = load_experiment(PROBE_EXPERIMENT, overrides={**sized, **overrides, "model_args.backbone": backbone},
                          origins=origins)
    cfg.name = backbone.replace("/", "-")
    return cfg


def backbone_costs(cfg: ExperimentConfig, splits, log: Log) -> dict:
    """Parameters, multiply-adds of one image at the input size, and extraction images/s on this device."""
    from torch.utils.flop_counter import FlopCounterMode

    runtime = Runtime.resolve(cfg)
    device = runtime.device
    runtime.seed(cfg.seeds[0])
    model = build_model(cfg, splits.num_classes, splits.input_size).to(device).eval()
    params = sum(p.numel() for p in model.backbone.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.forward_features(torch.zeros(1, *splits.input_size, device=device))
    preprocess = fit_preprocess(cfg, splits)
    # decoded beforehand, so the figure is the backbone's own speed, not the JPEG decoder's
    sample = splits.train.subset(torch.arange(min(SPEED_IMAGES, len(splits.train))))
    sample = (sample.cache_in_memory() if hasattr(sample, "cache_in_memory") else sample).to(device)
    amp, engine = runtime.precision, runtime.engine
    batch = min(cfg.train.eval_batch_size, 32)
    compute_features(model, sample.subset(torch.arange(min(batch, len(sample)))), preprocess, batch_size=batch,
                     device=device, amp=amp, progress=False, engine=engine)  # warm-up: compile, allocations
    tick = time.perf_counter()
    compute_features(model, sample, preprocess, batch_size=batch, device=device, amp=amp, progress=False,
                     engine=engine)
    seconds = time.perf_counter() - tick
    spec = model_spec(cfg)
    entry = get_backbone(spec.backbone)
    weights = resolve_weights(entry, spec.weights)
    return {"params": params, "macs": counter.get_total_flops() // 2, "input_size": list(splits.input_size),
            "extract_img_s": len(sample) / seconds, "device": str(device), "precision": amp,
            "engine": engine,
            "imagenet_top1": getattr(weights, "top1", None), "weights": getattr(weights, "name", str(weights))}


def recommend(rows: list[dict], num_val: int) -> dict | None:
    """The best mean validation accuracy; within half a validation image of it, the fewest multiply-adds."""
    candidates = [r for r in rows if r.get("val_acc")]
    if not candidates:
        return None
    best = max(mean_std(r["val_acc"])[0] for r in candidates)
    tied = [r for r in candidates if best - mean_std(r["val_acc"])[0] <= 0.5 / max(num_val, 1)]
    return min(tied, key=lambda r: r["macs"])


def probe_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    figure = headline_figure(rows).removeprefix("test ")  # accuracy, or a multi-label probe's mAP
    header = ["backbone", "head", "runs", f"val {figure}", f"test {figure}", "ImageNet top-1", "params (M)",
              "MACs (G)", "input", "extract img/s"]
    body = [[r["backbone"], r["head"], str(len(r["test_acc"])), pm(r["val_acc"], percent=True) if r["val_acc"] else "—",
             pm(r["test_acc"], percent=True), f"{r['imagenet_top1']:.1f} %" if r.get("imagenet_top1") else "—",
             f"{r['params'] / 1e6:.1f}", f"{r['macs'] / 1e9:.2f}", f"{r['input_size'][-1]} px",
             f"{r['extract_img_s']:.1f}"] for r in rows]
    return header, body


def recommendation_text(choice: dict | None, num_val: int, rows: list[dict] = ()) -> str:
    """The recommendation in a sentence; given the probe's `rows`, one the fewer multiply-adds won (within half a
    validation image of the best) says which row was best, so the reader is not told it was."""
    if choice is None:
        return "no recommendation: the runs have no validation split (data.val_fraction: 0)"
    figure = headline_figure([choice]).removeprefix("test ")
    scored = [r for r in rows if r.get("val_acc")]
    top = max(scored, key=lambda r: mean_std(r["val_acc"])[0]) if scored else choice
    if mean_std(top["val_acc"])[0] > mean_std(choice["val_acc"])[0]:
        why = (f"mean validation {figure} {pm(choice['val_acc'], percent=True)} on {num_val} images, within half an "
               f"image of the best ({top['backbone']}, {top['head']}: {pm(top['val_acc'], percent=True)}), "
               "with fewer multiply-adds")
    else:
        why = (f"best mean validation {figure} {pm(choice['val_acc'], percent=True)} on {num_val} images (ties within "
               "half an image go to the fewer multiply-adds)")
    return (f"recommended: {choice['backbone']} ({choice['head']}): {why}; chosen on validation only, its test "
            f"{figure} {pm(choice['test_acc'], percent=True)} was not looked at")


def run_probe(backbones: list[str], *, overrides: dict[str, Any], classic: list[str], out: str | None = None,
              progress: bool = True, log: Log = print, origins: dict[str, str] | None = None) -> Path:
    if len(set(backbones)) != len(backbones):
        raise ConfigError(f"--backbones: each backbone once, got {', '.join(backbones)}")
    configs = [probe_config(b, overrides, origins) for b in backbones]
    for cfg in configs:
        check_experiment(cfg)  # every unknown name, head or weights file before any work
    folder = None
    rows = []
    splits_by_key: dict = {}
    for cfg in configs:
        key = data_key(cfg)
        if key not in splits_by_key:
            splits_by_key[key] = load_data(cfg, log)
        splits = splits_by_key[key]
        if splits.multilabel and classic:
            raise ConfigError("--classic: the classic heads (scikit-learn) here predict one class an image; this data "
                              "is multi-label: probe with the linear head alone")
        if folder is None:
            folder = create_unique_dir(Path(out or cfg.out) / "probe")
            log(f"probe folder: {folder}")
        backbone = model_spec(cfg).backbone
        log(f"\n=== {backbone}: linear probe ===")
        costs = backbone_costs(cfg, splits, log)
        log(f"{backbone}: {costs['params'] / 1e6:.1f} M parameters, {costs['macs'] / 1e9:.2f} G multiply-adds at "
            f"{costs['input_size'][-1]} px, {costs['extract_img_s']:.1f} img/s on {costs['device']}")
        experiment_dir = new_experiment_dir(cfg, splits, parent=folder / cfg.experiment_name, log=log)
        summary = run_units(cfg, experiment_dir, splits, progress=progress, log=log)
        runs = summary["runs"]
        keep_best = cfg.train.keep_best != "off"
        # a multi-label probe chooses on validation mAP (under val_acc / test_acc's keys, named by "figure")
        lead = "map" if splits.multilabel else "acc"
        val = [r[f"best_val_{lead}"] if keep_best else r[f"final_val_{lead}"] for r in runs]
        row = {"backbone": backbone, "head": "linear (V0)", "name": f"{backbone}: linear (V0)", "kind": "network",
               "val_acc": val if all(v is not None for v in val) else None, "figure": f"test_{lead}",
               "test_acc": [r[f"test_{lead}"] for r in runs], "test_loss": [r["test_loss"] for r in runs],
               "wall_time_s": [r["wall_time_s"] for r in runs], "lab": None, "folder": str(experiment_dir),
               "num_val": runs[0]["num_val"], **costs}
        rows.append(row)
        results = run_classic_heads(cfg, splits, classic, log=log) if classic else []
        for head in classic:
            mine = [r for r in results if r["head"] == head]
            rows.append({**costs, "backbone": backbone, "head": f"classic: {mine[0]['label']}",
                         "name": f"{backbone}: {mine[0]['label']}", "kind": "classic",
                         "val_acc": [r["val_acc"] for r in mine] if "val_acc" in mine[0] else None,
                         "test_acc": [r["test_acc"] for r in mine], "test_loss": None,
                         "wall_time_s": [r["fit_time_s"] for r in mine], "lab": None, "num_val": row["num_val"]})
    num_val = rows[0]["num_val"]
    choice = recommend(rows, num_val)
    header, body = probe_rows(rows)
    text = recommendation_text(choice, num_val, rows)
    atomic_write_json(folder / "probe.json", {"backbones": backbones, "overrides": overrides, "rows": rows,
                                              "recommended": choice["name"] if choice else None,
                                              "rule": "best mean validation accuracy; ties within half a "
                                                      "validation image to the fewer multiply-adds"})
    atomic_write_json(folder / "compare.json", {"experiments": [c.experiment_name for c in configs],
                                                "overrides": overrides, "rows": rows})
    atomic_write_text(folder / "probe.md", f"# Backbone probe\n\n{render_table(header, body, markdown=True)}\n\n"
                                           f"{text}\n")
    log(f"\n{render_table(header, body)}\n\n{text}\n\nresults: {folder}")
    return folder


__all__ = ["run_probe", "recommend", "probe_rows", "recommendation_text"]
