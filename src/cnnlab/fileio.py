"""Careful file writing: whole files appear atomically, folders are never reused.

Every file a run produces is written to a temporary file in the same folder, flushed
and fsync'ed, then renamed over the target: a crash, a full disk or a kill leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, IO

from cnnlab.errors import RunError


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise RunError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    _atomic_write(path, lambda handle: torch.save(obj, handle))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not readable JSON ({exc})") from None


def create_unique_dir(parent: Path) -> Path:
    """Create a new folder `parent/<time>-<random>` that no other run can also get.

    `mkdir` without `exist_ok` is atomic: two runs started in the same second into the
    same parent get different folders and never write into each other's files.
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{parent}: cannot create the output folder ({exc.strerror or exc})") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        candidate = parent / f"{stamp}-{secrets.token_hex(2)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"{candidate}: cannot create the run folder ({exc.strerror or exc})") from None
    raise RunError(f"{parent}: could not find a free run folder name")
