"""Careful file writing: whole files appear atomically, folders are never reused.

Every file a run produces is written to a temporary file in the same folder, flushed
and fsync'ed, then renamed over the target: a crash, a full disk or a kill leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from cnnlab.failpoints import failpoint
from cnnlab.errors import CheckpointError, CnnlabError, DataError, DiskFull, RunError


def _creation_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the process's umask (0o644 usually)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc, len(data)) from None
    try:
        # mkstemp creates 0600; results, figures and weights must stay readable by the group
        # (or a web server) on a shared machine, as a plain open() would leave them.
        os.fchmod(fd, _creation_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        failpoint(f"write {path.parent.name}/{path.name}")
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(path, exc, len(data)) from None
        raise
    _fsync_dir(path.parent)


def remove_write_debris(folder: Path, name: str = "*") -> None:
    """The temporary files of atomic writes (fileio.py: `.<name>.<random>.tmp`) that a killed process left in
    `folder`; call it only while holding the lock that keeps other writers of `name` out."""
    for debris in folder.glob(f".{name}.*.tmp"):
        debris.unlink(missing_ok=True)


def _write_error(path: Path, exc: OSError, size: int) -> RunError:
    """One line naming the file; on a full disk (or quota) also the space the write needed and what is free."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = 0
        return DiskFull(path, size, free)
    return RunError(f"{path}: cannot write ({exc.strerror or exc})")


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


def cache_dir(kind: str) -> Path:
    """Where cnnlab keeps what it can recompute (`kind`: features, splits): $CNNLAB_CACHE/kind,
    else $XDG_CACHE_HOME/cnnlab/kind, else ~/.cache/cnnlab/kind."""
    if os.environ.get("CNNLAB_CACHE"):
        return Path(os.environ["CNNLAB_CACHE"]).expanduser() / kind
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab" / kind


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    import io

    import torch

    # serialised in memory first: the write then knows its size, which a full disk's message names
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, buffer.getbuffer())


def read_state_file(path: Path) -> dict:
    """A tensor dictionary from a weights file, without ever executing code from it.

    Accepts safetensors, and `torch.save` files that `torch.load(weights_only=True)` reads:
    a plain state dict (torchvision, timm), `{"state_dict": ...}`, or a cnnlab checkpoint
    (`{"format": ..., "model": ...}`). Anything else is one clear `CheckpointError`.
    """
    import torch

    path = Path(path)
    expected = ("expected a state dict (torchvision/timm .pth), a cnnlab checkpoint.pt "
                "or a .safetensors file")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception:  # SafetensorError, OSError, ...: the library's text is no help to the user
            raise CheckpointError(f"{path}: not a readable safetensors file; {expected}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # PyTorch's own message would suggest weights_only=False, i.e. running the file's code.
        raise CheckpointError(f"{path}: not a weights file cnnlab can read safely; {expected}") from None
    if isinstance(state, dict):  # a cnnlab checkpoint of a phase with frozen parts names the rest
        state = with_base(state, path)
    for key in ("state_dict", "model"):  # a training checkpoint wrapping the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f"{path}: holds no tensors by name; {expected}")
    return state


def confine(root: Path, relative: str, *, where: str, error: type[CnnlabError] = DataError,
            what: str = "the dataset folder") -> Path:
    """Resolve `relative` under `root`, refusing absolute paths and anything that escapes `root` (`..`, a link
    leading elsewhere): the one check for every path a file names (list files, CSVs, checkpoints, Hub folders)."""
    rel = relative.replace("\\", "/")
    if rel.startswith("/") or PurePosixPath(rel).is_absolute() or (len(rel) > 1 and rel[1] == ":"):
        raise error(f"{where}: '{relative}' is an absolute path; expected a path relative to {root}")
    root_resolved = Path(root).resolve()
    target = (root_resolved / rel).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise error(f"{where}: '{relative}' points outside {what} {root}")
    return target


def inside(folder: Path, name: Any, *, source: Any, field: str, error: type[CnnlabError] = CheckpointError) -> Path:
    """The file `name` that the field `field` of a file in `folder` refers to (`confine`d to the folder)."""
    if not isinstance(name, str) or not name:
        raise error(f"{source}: field '{field}': expected a file name inside {folder}, got {name!r}")
    return confine(folder, name, where=f"{source}: field '{field}'", error=error, what="its folder")


def with_base(state: dict, path: Path) -> dict:
    """A cnnlab checkpoint naming a `base_file` (the whole model as a phase with frozen parameters
    started; training/checkpoint.py) gets its model completed from that file, next to it."""
    import torch

    if not state.get("base_file"):
        return state
    base_file = inside(Path(path).parent, state["base_file"], source=path, field="base_file")
    try:
        base = torch.load(base_file, map_location="cpu", weights_only=True)["model"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: holds only the trainable part of the model; the rest was in "
                              f"{base_file}, which is missing") from None
    except Exception as exc:
        raise CheckpointError(f"{base_file}: not a loadable cnnlab checkpoint part ({exc})") from None
    return {**state, "model": {**base, **state["model"]}}


def read_text_file(path: Path, *, what: str, error: type[CnnlabError] = RunError) -> str:
    """A text file a user made, as spreadsheets and editors write it: UTF-8 with or without a byte-order
    mark, UTF-16 with one (Excel's "Unicode text"), else Windows-1252 / Latin-1 (Excel's CSV on Windows);
    line endings are the caller's `splitlines()`'s business (\n, \r\n, \r). Unreadable: `error`, naming
    the file and `what` it was read as."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise error(f"{path}: the {what} starts as UTF-16 but is not valid UTF-16") from None
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):  # latin-1 decodes any bytes: the last resort
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")


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
