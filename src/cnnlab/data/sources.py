"""Data sources by name, auto-detection of a folder's layout, and the hold-out split."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from cnnlab.config import DATA_SOURCES, DataConfig
from cnnlab.data.birds import detect_layout, read_listed
from cnnlab.data.streaming import StreamingSet, default_workers
from cnnlab.data.cifar import default_cache_dir, download_cifar100, is_cifar_folder, read_cifar100
from cnnlab.data.images import DataSplits
from cnnlab.data.imagefolder import is_image_folder, read_image_folder
from cnnlab.data.npz import is_npz_folder, read_npz_folder
from cnnlab.data.split import holdout_split, stratified_subset
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


# Bird layouts are streamed from disk (see birds.py, streaming.py).
LISTED = {"cub-lab": "class folders NNN.Name/ beside train.txt and test.txt (the lab's birds)",
          "cub200-2010": "CUB-200 as distributed: images/ + lists/train.txt, lists/test.txt",
          "cub200-2011": "CUB-200-2011 as distributed: images.txt, image_class_labels.txt, train_test_split.txt, "
                         "classes.txt, images/"}


# Every name the configuration accepts has a reader here, and nothing else does.
assert set(DATA_SOURCES) == {"auto", *SOURCES, *LISTED}, "data sources out of step with config.DATA_SOURCES"


def describe_sources() -> dict[str, str]:
    return {"auto": "detect the layout of --data PATH (default: cifar100)",
            **{name: what for name, (what, _, _) in SOURCES.items()}, **LISTED}


def detect_source(path: Path) -> str:
    for name in ("npz", "cifar100-folder", "imagefolder"):
        if SOURCES[name][1](path):
            return name
    layout = detect_layout(path)
    if layout:
        return layout
    raise DataError(f"{path}: no dataset layout recognised; expected one of: "
                    "train.npz + test.npz; cifar-100-python/{train,test,meta}; "
                    "train/<class>/ + test/<class>/ image folders; train.txt + test.txt beside class folders; "
                    "CUB-200 (images/ + lists/) or CUB-200-2011 (images.txt, ...)")


def _listed_splits(cfg: DataConfig, path: Path, layout: str, preprocessing, log) -> DataSplits:
    listed = read_listed(path, layout)
    size = cfg.image_size or (preprocessing.size if preprocessing else 224)
    resize = cfg.resize if cfg.resize != "auto" else (preprocessing.resize if preprocessing else "stretch")
    crop_ratio = preprocessing.crop_ratio if preprocessing else 0.875
    workers = default_workers() if cfg.workers < 0 else cfg.workers

    def make(images) -> StreamingSet:
        return StreamingSet(list(images.paths), torch.tensor(images.labels, dtype=torch.long), size=size,
                            resize=resize, crop_ratio=crop_ratio, num_workers=workers)

    train, test = make(listed.train), make(listed.test)
    if cfg.skip_bad_images:
        train, test = _drop_bad_images(train, "train", path, log), _drop_bad_images(test, "test", path, log)
    description = f"{listed.description}, images {resize} to {size}×{size}"
    if cfg.cache:
        train, test = train.cache_in_memory(), test.cache_in_memory()
        description += ", cached in memory as uint8"
    return DataSplits(train=train, val=None, test=test, class_names=listed.class_names, description=description)


def _drop_bad_images(split: StreamingSet, name: str, path: Path, log) -> StreamingSet:
    """Decode every image once and leave out those that fail, naming them."""
    bad = split.find_bad_images()
    if not bad:
        return split
    log(f"skipping {len(bad)} bad {name} image(s): " + "; ".join(msg for _, msg in bad[:20])
        + (" ..." if len(bad) > 20 else ""))
    keep = sorted(set(range(len(split))) - {i for i, _ in bad})
    if not keep:
        raise DataError(f"{path}: every {name} image failed to decode")
    return split.subset(keep)


def load_splits(cfg: DataConfig, preprocessing=None, log=print) -> DataSplits:
    """Read the dataset `cfg` names and carve the stratified validation split out of train.

    `preprocessing` (a backbone weights' Preprocessing) sets the size and resize mode of
    streamed images unless `cfg` names them.
    """
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
    if source in LISTED:
        splits = _listed_splits(cfg, path, source, preprocessing, log)
        return _finish(cfg, splits)
    if source == "cifar100" and not is_cifar_folder(path):
        if not cfg.download:
            raise DataError(f"CIFAR-100 is not in {path} and data.download is false; "
                            f"put cifar-100-python/ there or pass --data PATH")
        download_cifar100(path)
    detector, reader = SOURCES[source][1], SOURCES[source][2]
    if not detector(path):
        raise DataError(f"{path}: does not look like a '{source}' dataset ({SOURCES[source][0]})")
    return _finish(cfg, reader(path, cfg.num_classes))


def _finish(cfg: DataConfig, splits: DataSplits) -> DataSplits:
    if cfg.subset:
        splits.train = stratified_subset(splits.train, cfg.subset, cfg.split_seed)
    # With k folds the folds themselves are the validation sets (see experiment.py).
    splits.train, splits.val = holdout_split(splits.train, 0.0 if cfg.folds else cfg.val_fraction, cfg.split_seed)
    return splits
