"""Feature caching: a frozen backbone without augmentation computes its features once.

The features of each split are stored on disk (safetensors, float16) under a key made of
everything they depend on — backbone, weights, preprocessing, pooling, precision and the
exact images — so another seed, another head or another experiment reuses them, and any
change to one of those makes a new entry instead of a stale hit.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm
from safetensors.torch import load_file, save
from cnnlab.data.images import ImageSet
from cnnlab.data.streaming import StreamingSet
from cnnlab.fileio import atomic_write_bytes, cache_dir
from cnnlab.models.base import Classifier
from cnnlab.training.engines import compile_module, engine_versions
from cnnlab.training.loop import autocast_context, images_per_batch


def default_cache_dir() -> Path:
    """$CNNLAB_CACHE/features, else $XDG_CACHE_HOME/cnnlab/features, else ~/.cache/cnnlab/features."""
    return cache_dir("features")


def _data_identity(data) -> str:
    digest = hashlib.sha256()
    if isinstance(data, StreamingSet):
        digest.update(f"{data.size}:{data.resize}:{data.crop_ratio}:{data.interpolation}".encode())
        for item in data.paths:
            if isinstance(item, Path):
                stat = item.stat()
                digest.update(f"{item}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
            else:  # a dataset row (data/hub.py): its table's fingerprint and row
                digest.update(f"{item.identity()}\n".encode())
    else:
        digest.update(data.images.cpu().numpy().tobytes())
    digest.update(data.labels.cpu().numpy().tobytes())
    return digest.hexdigest()


def feature_key(model: Classifier, data, preprocess, amp: bool, engine: str = "torch") -> str:
    """A digest of everything the features depend on: the backbone's tensors, input, precision, engine
    (another engine's features differ in the last digits: they are another entry)."""
    parts = {"model": model.features_identity(), "mean": preprocess.state(), "amp": amp,
             "data": _data_identity(data), "format": 2}
    if engine != "torch":  # torch's entries keep the key they had before engines existed
        parts["engine"] = f"{engine} {engine_versions().get(engine, '')}"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@torch.no_grad()
def compute_features(model: Classifier, data, preprocess, *, batch_size: int, device: torch.device,
                     amp: bool, channels_last: bool = False, progress: bool = True, engine: str = "torch"
                     ) -> torch.Tensor:
    """Backbone features of every image, in batches sized to the images, with a progress bar (images/s).

    `engine` (resolved: torch, openvino, onnxruntime) runs `forward_features`, compiled once here, in fp32
    whatever the run's precision: computed once and cached, the features should be the best they can be
    (OpenVINO's bf16 ones cost 0.3 points on the birds' linear probe, 87.51 % against PyTorch's bf16
    87.80 %, for 2.2× the speed; benchmarks/engines.py)."""
    model.eval()
    chunks = []
    forward = None
    bar = tqdm(total=len(data), desc="features", unit="img", disable=not progress, leave=False)
    for images, _ in data.batches(images_per_batch(data, batch_size)):
        x = preprocess(images.to(device), train=False)
        if engine != "torch":
            forward = forward or compile_module(model.forward_features, x, engine)
            chunks.append(forward(x).float())
        else:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                chunks.append(model.forward_features(x).float().cpu())
        bar.update(len(images))
    bar.close()
    return torch.cat(chunks)


def cached_features(model: Classifier, data, preprocess, *, cache_dir: Path | None, batch_size: int,
                    device: torch.device, amp: bool, channels_last: bool = False, log=print,
                    progress: bool = True, engine: str = "torch") -> tuple[ImageSet, bool]:
    """(features as an ImageSet of float16 tensors, whether they came from the cache)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"{feature_key(model, data, preprocess, amp, engine)}.safetensors"
    if path.is_file():
        try:
            stored = load_file(str(path))
            return ImageSet(stored["features"], stored["labels"]), True
        except Exception as exc:  # a damaged entry is recomputed, never trusted
            log(f"feature cache entry {path} is unreadable ({exc}); recomputing")
    features = compute_features(model, data, preprocess, batch_size=batch_size, device=device, amp=amp,
                                channels_last=channels_last, progress=progress, engine=engine)
    features = features.half()
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"features": features.contiguous(), "labels": data.labels.cpu().contiguous()}))
    return ImageSet(features, data.labels.cpu()), False


def feature_preprocess(x: torch.Tensor, *, train: bool, generator=None) -> torch.Tensor:
    """Cached features only need casting back to float32."""
    return x.float()
