"""CIFAR-100 in its official python layout (`cifar-100-python/{train,test,meta}`).

The download goes through torchvision's own URL, checksum and extractor, into a cache
folder; reading uses a restricted unpickler that only rebuilds numpy arrays, so a
tampered file cannot run code.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from cnnlab.data.images import DataSplits, ImageSet, imageset_from_numpy
from cnnlab.errors import DataError

FOLDER = "cifar-100-python"  # torchvision's CIFAR100.base_folder (torchvision is imported only to download)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


def default_cache_dir() -> Path:
    """$CNNLAB_DATA, else $XDG_CACHE_HOME/cnnlab/data, else ~/.cache/cnnlab/data."""
    if os.environ.get("CNNLAB_DATA"):
        return Path(os.environ["CNNLAB_DATA"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cnnlab" / "data"


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        data = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected the official CIFAR-100 python files)") from None
    except Exception as exc:  # a corrupt or foreign pickle can fail in many ways
        raise DataError(f"{path}: not a CIFAR-100 python pickle ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(data).__name__}")
    return data


def _read_split(path: Path, keep: int) -> ImageSet:
    batch = _load_pickle(path)
    for key in ("data", "fine_labels"):
        if key not in batch:
            raise DataError(f"{path}: missing key '{key}' (is this CIFAR-10 rather than CIFAR-100?)")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataError(f"{path}: 'data' must be (N, 3072) with one fine label per row, got {data.shape}")
    mask = labels < keep
    # The rows store three 32×32 planes (R, G, B); reshape to NHWC for validation.
    images = data[mask].astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return imageset_from_numpy(images, labels[mask], source=str(path))


def is_cifar_folder(path: Path) -> bool:
    return (path / FOLDER / "train").is_file() or (path.name == FOLDER and (path / "train").is_file())


def read_cifar100(path: Path, num_classes: int) -> DataSplits:
    """Read the official files from `path` (the folder holding `cifar-100-python/`, or that folder)."""
    folder = path if path.name == FOLDER and (path / "train").is_file() else path / FOLDER
    meta = _load_pickle(folder / "meta")
    names = [str(n) for n in meta.get("fine_label_names", [])]
    if len(names) < num_classes:
        raise DataError(f"{folder / 'meta'}: expected at least {num_classes} fine_label_names, got {len(names)}")
    return DataSplits(train=_read_split(folder / "train", num_classes),
                      val=None, test=_read_split(folder / "test", num_classes),
                      class_names=names[:num_classes],
                      description=f"CIFAR-100 fine labels 0..{num_classes - 1} from {folder}")


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders (deepest first) a failed download created, each only if it holds nothing (a partial
    archive torchvision left is removed first: it is never a usable download)."""
    for folder in folders:
        partial = folder / "cifar-100-python.tar.gz"
        if partial.is_file():
            partial.unlink()
        try:
            folder.rmdir()
        except OSError:  # not empty (a user's own files) or not ours: leave it
            return


def download_cifar100(root: Path) -> None:
    """Fetch and extract the official archive into `root` with torchvision's checksum."""
    from torchvision.datasets import CIFAR100
    from torchvision.datasets import utils as tv_utils

    made = [p for p in (root, *root.parents) if not p.exists()]  # the folders this call creates
    root.mkdir(parents=True, exist_ok=True)
    try:
        tv_utils.download_and_extract_archive(CIFAR100.url, str(root), filename=CIFAR100.filename,
                                              md5=CIFAR100.tgz_md5)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad checksum a RuntimeError
        _remove_if_empty(made)  # a failed download (offline) leaves no empty cache folder behind
        raise DataError(
            f"CIFAR-100 is not in {root} and could not be downloaded ({exc}). Either download "
            f"{CIFAR100.url} on a machine with internet and extract it into {root}, or pass "
            "--data PATH pointing at a folder holding cifar-100-python/, .npz files "
            "(train.npz/test.npz) or an image folder (train/<class>/*, test/<class>/*)."
        ) from None
    if not is_cifar_folder(root):
        raise DataError(f"{root}: the downloaded archive did not contain {FOLDER}/train")
