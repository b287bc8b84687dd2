"""Feature caching: a frozen backbone without augmentation computes its features once.

The features of each split are stored on disk (safetensors, float16) under a key made of
everything they depend on — backbone, weights, preprocessing, pooling, precision and the
exact images — so another seed, another head or another experiment reuses them, and any
change to one of those makes a new entry instead of a stale hit.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch
from tqdm.auto import tqdm
from safetensors import safe_open
from safetensors.torch import load_file, save
from cnnlab.data.images import ImageSet
from cnnlab.data.streaming import StreamingSet
from cnnlab.errors import RunError
from cnnlab.fileio import atomic_write_bytes, cache_dir, remove_write_debris
from cnnlab.models.base import Classifier
from cnnlab.engines import compile_module, engine_versions
from cnnlab.training.loop import images_per_batch
from cnnlab.training.runtime import autocast


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


# Backbones compiled for an engine, by what they compute: exporting to ONNX and compiling takes ~2 s, and a
# run computes the features of three splits, a probe of several seeds on one backbone as many times again.
# Keyed by the digest of the backbone's tensors, so a model whose weights changed is compiled anew; two kept
# (a compiled network holds a copy of its weights).
_COMPILED: OrderedDict[tuple, object] = OrderedDict()
_COMPILED_KEPT = 2


def compiled_features(model: Classifier, example: torch.Tensor, engine: str):
    """`model.forward_features` compiled for `engine`, reused while its backbone's tensors are the same."""
    key = (model.features_identity(), engine, tuple(example.shape[1:]), str(example.dtype))
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    forward = _COMPILED[key] = compile_module(model.forward_features, example, engine)
    while len(_COMPILED) > _COMPILED_KEPT:
        _COMPILED.popitem(last=False)
    return forward


@torch.no_grad()
def compute_features(model: Classifier, data, preprocess, *, batch_size: int, device: torch.device,
                     amp: bool, channels_last: bool = False, progress: bool = True, engine: str = "torch"
                     ) -> torch.Tensor:
    """Backbone features of every image, in batches sized to the images, with a progress bar (images/s).

    `engine` (resolved: torch, openvino, onnxruntime) runs `forward_features`, compiled once (compiled_features),
    in fp32 whatever the run's precision: computed once and cached, the features should be the best they can be
    (OpenVINO's bf16 ones cost 0.3 points on the birds' linear probe, 87.51 % against PyTorch's bf16
    87.80 %, for 2.2× the speed; benchmarks/engines.py)."""
    model.eval()
    chunks = []
    forward = None
    bar = tqdm(total=len(data), desc="features", unit="img", disable=None if progress else True, leave=False)
    for images, _ in data.batches(images_per_batch(data, batch_size)):
        x = preprocess(images.to(device), train=False)
        if engine != "torch":
            forward = forward or compiled_features(model, x, engine)
            chunks.append(forward(x).float())
        else:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                chunks.append(model.forward_features(x).float().cpu())
        bar.update(len(images))
    bar.close()
    return torch.cat(chunks)


def cached_features(model: Classifier, data, preprocess, *, cache_dir: Path | None, batch_size: int,
                    device: torch.device, amp: bool, channels_last: bool = False, log=print,
                    progress: bool = True, engine: str = "torch") -> tuple[ImageSet, bool]:
    """(features as an ImageSet of float16 tensors, whether they came from the cache).

    Safe for runs sharing the cache at once: the first to need an entry computes it under a lock
    (`cache_lock`) while the others wait, then read it (one computation, one file). An entry is
    checked against the digest of its tensors written in its metadata before it is trusted; a
    truncated or damaged one is named in one line and computed again. A cache folder that cannot
    be written (a full disk, no permission) costs the cache, not the run: one warning, and the
    features are used from memory.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"{feature_key(model, data, preprocess, amp, engine)}.safetensors"
    with cache_lock(path, log):
        stored = _read_entry(path, len(data), log)
        if stored is not None:
            return stored, True
        features = compute_features(model, data, preprocess, batch_size=batch_size, device=device, amp=amp,
                                    channels_last=channels_last, progress=progress, engine=engine).half()
        tensors = {"features": features.contiguous(), "labels": data.labels.cpu().contiguous()}
        try:
            atomic_write_bytes(path, save(tensors, metadata={"sha256": _digest(tensors)}))
        except RunError as exc:
            log(f"warning: features not cached ({exc}); this run goes on with them in memory")
    return ImageSet(features, data.labels.cpu()), False


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read_entry(path: Path, images: int, log) -> ImageSet | None:
    """The entry at `path` if it is whole and its tensors match their digest; None (said in one line) if not."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            recorded = (handle.metadata() or {}).get("sha256")
        stored = load_file(str(path))
        whole = (recorded == _digest(stored) and set(stored) == {"features", "labels"}
                 and len(stored["features"]) == len(stored["labels"]) == images)
        if recorded is None:  # whole, most likely, but nothing to check it against
            log(f"feature cache entry {path} was written by cnnlab < 0.11, without a digest; computing it again")
            return None
        problem = "" if whole else "its tensors do not match the digest written with them"
    except Exception as exc:  # noqa: BLE001 — truncated, not safetensors, unreadable: all mean "recompute"
        problem = f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if problem:
        log(f"feature cache entry {path} is damaged ({problem}); computing it again")
        return None
    return ImageSet(stored["features"], stored["labels"])


@contextlib.contextmanager
def cache_lock(path: Path, log):
    """An exclusive lock on `.locks/<entry>.lock` beside the entries (fcntl), so runs sharing a cache compute an
    entry once; no lock where the folder cannot take the file (read-only, full) or the platform has no fcntl.
    Lock files stay (removing one while another run waits on it would let a third take a second lock)."""
    try:
        import fcntl

        (path.parent / ".locks").mkdir(parents=True, exist_ok=True)
        handle = open(path.parent / ".locks" / f"{path.name}.lock", "a+b")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"feature cache: another run is computing {path.name}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): compute alone, write atomically
            yield
            return
        remove_write_debris(path.parent, path.name)  # a killed writer's half file, never renamed into place
        yield


def feature_preprocess(x: torch.Tensor, *, train: bool, generator=None) -> torch.Tensor:
    """Cached features only need casting back to float32."""
    return x.float()
