"""Remember scikit-learn's split draws on disk, so a later run need not import scikit-learn.

A draw is a pure function of the labels, its parameters and the scikit-learn release, so the
key is a digest of exactly those; a file that cannot be read, or holds indices that cannot be
this draw's, is drawn again and replaced. The memo is an optimisation only: a cache folder that
cannot be written leaves every run as it was, drawing each time.
"""
from __future__ import annotations

import hashlib
import io
from typing import Callable

import numpy as np

from cnnlab.errors import RunError, warn
from cnnlab.fileio import atomic_write_bytes, cache_dir

Draw = Callable[[], tuple[np.ndarray, ...]]


def sklearn_release(package: str = "scikit-learn") -> str:
    """The installed scikit-learn's version (or `package`'s), read from its metadata (importing it is what we
    avoid)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def memo_key(kind: str, labels: np.ndarray, params: tuple) -> str:
    labels = np.ascontiguousarray(labels)
    release = sklearn_release()
    if labels.ndim == 2:  # multi-label targets: iterative-stratification draws them (data/split.py)
        release += f"|iterative-stratification {sklearn_release('iterative-stratification')}"
    digest = hashlib.sha256(f"{kind}|{params!r}|{release}|{labels.dtype.str}|{labels.shape}|".encode())
    digest.update(labels.tobytes())
    return digest.hexdigest()[:32]


def remembered(kind: str, labels: np.ndarray, params: tuple, draw: Draw) -> tuple[np.ndarray, ...]:
    """`draw()`'s index arrays, from the memo when this exact draw was made before."""
    path = cache_dir("splits") / f"{kind}-{memo_key(kind, labels, params)}.npz"
    stored = _read(path, len(labels))
    if stored is not None:
        return stored
    arrays = draw()
    _write(path, arrays)
    return arrays


def _read(path, n: int) -> tuple[np.ndarray, ...] | None:
    """The stored draw; None if there is none, or (said in one line) if the file is damaged: the zip's
    CRC-32 of each array catches a flipped bit, its directory a truncation."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = tuple(archive[f"a{i}"] for i in range(len(archive.files)))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 — BadZipFile (CRC, truncation), ValueError, KeyError...: redraw
        warn(f"split memo {path} is damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
             "drawing the split again")
        return None
    plausible = arrays and all(a.ndim == 1 and a.dtype.kind in "iu" and (a.size == 0 or 0 <= a.min() <= a.max() < n)
                               for a in arrays)
    if not plausible:
        warn(f"split memo {path} holds indices that cannot be this split's; drawing the split again")
        return None
    return tuple(a.astype(np.int64) for a in arrays)


def _write(path, arrays: tuple[np.ndarray, ...]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **{f"a{i}": np.asarray(a, dtype=np.int64) for i, a in enumerate(arrays)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except (OSError, RunError):  # a read-only or full cache folder only costs the memo
        pass
