"""Data sources by name, auto-detection of a folder's layout, and the hold-out split."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from cnnlab.config import DataConfig
from cnnlab.data.cifar import default_cache_dir, download_cifar100, is_cifar_folder, read_cifar100
from cnnlab.data.images import DataSplits
from cnnlab.data.imagefolder import is_image_folder, read_image_folder
from cnnlab.data.npz import is_npz_folder, read_npz_folder
from cnnlab.data.split import holdout_split
from cnnlab.errors import DataError

# name → (what it reads, detector, reader)
SOURCES: dict[str, tuple[str, Callable[[Path], bool], Callable[[Path, int], DataSplits]]] = {
    "cifar100": ("official CIFAR-100, downloaded through torchvision into the cache folder",
                 is_cifar_folder, read_cifar100),
    "cifar100-folder": ("a local folder holding the official cifar-100-python/ files",
                        is_cifar_folder, read_cifar100),
    "npz": ("train.npz + test.npz with images (uint8 N×H×W×3), labels, optional class_names",
            is_npz_folder, read_npz_folder),
    "imagefolder": ("train/<class>/*.png|jpg and test/<class>/* image folders",
                    is_image_folder, read_image_folder),
}


def describe_sources() -> dict[str, str]:
    return {"auto": "detect the layout of --data PATH (default: cifar100)",
            **{name: what for name, (what, _, _) in SOURCES.items()}}


def detect_source(path: Path) -> str:
    for name in ("npz", "cifar100-folder", "imagefolder"):
        if SOURCES[name][1](path):
            return name
    raise DataError(f"{path}: no dataset layout recognised; expected one of: "
                    "train.npz + test.npz; cifar-100-python/{train,test,meta}; "
                    "train/<class>/ + test/<class>/ image folders")


def load_splits(cfg: DataConfig) -> DataSplits:
    """Read the dataset `cfg` names and carve the stratified validation split out of train."""
    source = cfg.source
    path = Path(cfg.path).expanduser() if cfg.path else None
    if path is None and source in ("auto", "cifar100"):
        source, path = "cifar100", default_cache_dir()
    elif path is None:
        raise DataError(f"data.source '{source}' needs a path (--data PATH)")
    elif not path.exists():
        raise DataError(f"{path}: data folder does not exist")
    elif not path.is_dir():
        raise DataError(f"{path}: expected a folder, found a file")
    if source == "auto":
        source = detect_source(path)
    if source == "cifar100" and not is_cifar_folder(path):
        if not cfg.download:
            raise DataError(f"CIFAR-100 is not in {path} and data.download is false; "
                            f"put cifar-100-python/ there or pass --data PATH")
        download_cifar100(path)
    detector, reader = SOURCES[source][1], SOURCES[source][2]
    if not detector(path):
        raise DataError(f"{path}: does not look like a '{source}' dataset ({SOURCES[source][0]})")
    splits = reader(path, cfg.num_classes)
    splits.train, splits.val = holdout_split(splits.train, cfg.val_fraction, cfg.split_seed)
    return splits
