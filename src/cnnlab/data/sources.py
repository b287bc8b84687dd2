"""Data sources by name, auto-detection of a folder's layout, and the hold-out split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cnnlab.catalogue import SOURCE_DESCRIPTIONS
from cnnlab.config import DATA_SOURCES, DataConfig
from cnnlab.data.birds import detect_layout, read_listed
from cnnlab.data.streaming import StreamingSet, default_workers
from cnnlab.data.cifar import default_cache_dir, download_cifar100, is_cifar_folder, read_cifar100
from cnnlab.data.images import DataSplits
from cnnlab.data.classfolder import (LabelledFiles, is_class_folder, list_class_folder, list_image_folder,
                                     read_labels_csv, read_split_file, split_rows, three_way_split)
from cnnlab.data.imagefolder import is_image_folder
from cnnlab.data.npz import is_npz_folder, read_npz_folder
from cnnlab.data.split import holdout_split, stratified_subset, stratified_subset_index
from cnnlab.errors import DataError

# name → (what it reads, detector, reader)
SOURCES: dict[str, tuple[str, Callable[[Path], bool], Callable[[Path, int], DataSplits]]] = {
    name: (SOURCE_DESCRIPTIONS[name], detect, read)
    for name, detect, read in (("cifar100", is_cifar_folder, read_cifar100),
                               ("cifar100-folder", is_cifar_folder, read_cifar100),
                               ("npz", is_npz_folder, read_npz_folder))}
# Photographs of any size, decoded and resized by worker processes (kept in memory when small).
PHOTOS = {name: SOURCE_DESCRIPTIONS[name] for name in ("imagefolder", "classfolder", "csv")}
MEMORY_LIMIT = 1 << 30  # bytes of uint8 images under which class folders are held in memory


# Bird layouts are streamed from disk (see birds.py, streaming.py).
LISTED = {name: SOURCE_DESCRIPTIONS[name] for name in ("cub-lab", "cub200-2010", "cub200-2011")}


# Every name the configuration accepts has a reader here, and nothing else does.
assert set(DATA_SOURCES) == {"auto", *SOURCES, *LISTED, *PHOTOS} == set(SOURCE_DESCRIPTIONS), \
    "data sources out of step with config.DATA_SOURCES or catalogue.SOURCE_DESCRIPTIONS"


def describe_sources() -> dict[str, str]:
    return dict(SOURCE_DESCRIPTIONS)


def detect_source(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    for name in ("npz", "cifar100-folder"):
        if SOURCES[name][1](path):
            return name
    if is_image_folder(path):
        return "imagefolder"
    layout = detect_layout(path)
    if layout:
        return layout
    if is_class_folder(path):
        return "classfolder"
    raise DataError(f"{path}: no dataset layout recognised; expected one of: "
                    "train.npz + test.npz; cifar-100-python/{train,test,meta}; "
                    "train/<class>/ + test/<class>/ image folders; train.txt + test.txt beside class folders; "
                    "CUB-200 (images/ + lists/) or CUB-200-2011 (images.txt, ...); "
                    "a folder of class folders of images; a CSV of path,label")


@dataclass(frozen=True)
class Resizing:
    """How streamed images reach the input size, as `cfg` and the weights say (recorded with the run)."""

    resize: str
    crop_ratio: float
    interpolation: str

    @classmethod
    def of(cls, cfg: DataConfig, preprocessing) -> "Resizing":
        def pick(key: str, default):
            asked = getattr(cfg, key)
            return asked if asked != "auto" else (getattr(preprocessing, key) if preprocessing else default)

        return cls(resize=pick("resize", "stretch"), crop_ratio=preprocessing.crop_ratio if preprocessing else 0.875,
                   interpolation=pick("interpolation", "bilinear"))

    def fields(self) -> dict:
        return {"resize": self.resize, "crop_ratio": self.crop_ratio, "interpolation": self.interpolation}


def _streamer(cfg: DataConfig, preprocessing, size: int):
    """(make(paths, labels) → StreamingSet, its Resizing) as `cfg` and the weights say."""
    resizing = Resizing.of(cfg, preprocessing)
    workers = default_workers() if cfg.workers < 0 else cfg.workers

    def make(paths: list[Path], labels: list[int]) -> StreamingSet:
        return StreamingSet(list(paths), torch.tensor(labels, dtype=torch.long), size=size, num_workers=workers,
                            **resizing.fields())

    return make, resizing


def named_image_size(cfg: DataConfig, preprocessing) -> int:
    """The side images are resized to when the experiment or its weights say: data.image_size, else
    the pretrained weights' size; 0 when neither does (the images or the model then decide)."""
    return cfg.image_size or (preprocessing.size if preprocessing is not None else 0)


def _listed_splits(cfg: DataConfig, path: Path, layout: str, preprocessing, log) -> DataSplits:
    listed = read_listed(path, layout)
    size = named_image_size(cfg, preprocessing) or 224
    stream, resizing = _streamer(cfg, preprocessing, size)

    def make(images) -> StreamingSet:
        return stream(images.paths, images.labels)

    train, test = make(listed.train), make(listed.test)
    if cfg.skip_bad_images:
        train, test = _drop_bad_images(train, "train", path, log), _drop_bad_images(test, "test", path, log)
    description = f"{listed.description}, images {resizing.resize} to {size}×{size}"
    if cfg.cache:  # bird lists stream unless asked (None or false)
        train, test = train.cache_in_memory(), test.cache_in_memory()
        description += ", cached in memory as uint8"
    return DataSplits(train=train, val=None, test=test, class_names=listed.class_names, description=description,
                      **resizing.fields())


def _photo_size(cfg: DataConfig, preprocessing, default_size: int, paths: list[Path]) -> int:
    """The side images are resized to: asked for, the weights', the images' own (one square size), or the model's."""
    named = named_image_size(cfg, preprocessing)
    if named:
        return named
    from PIL import Image

    sizes = set()
    for path in paths:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.add(image.size)
        except Exception:  # a broken file is named when it is decoded
            continue
        if len(sizes) > 1:
            break
    if len(sizes) == 1 and len({*next(iter(sizes))}) == 1:
        return next(iter(sizes))[0]
    return default_size


def _photo_splits(cfg: DataConfig, path: Path, source: str, preprocessing, default_size: int, log) -> DataSplits:
    """Image folders, class folders and CSVs: listed files, decoded by workers, in memory when small."""
    if source == "imagefolder":
        files, test_files = list_image_folder(path)
        plan = None
    else:
        files = read_labels_csv(path) if source == "csv" else list_class_folder(path)
        test_files = None
        if cfg.split_file:
            plan = read_split_file(Path(cfg.split_file).expanduser(), files)
        else:
            plan = three_way_split(files, val_fraction=0.0 if cfg.folds else cfg.val_fraction,
                                   test_fraction=cfg.test_fraction, seed=cfg.split_seed)
        if not plan["test"]:
            raise DataError(f"{path}: no test split (data.test_fraction is 0); set data.test_fraction > 0")
        if cfg.subset:  # drawn here, so split.csv lists the training images actually used
            keep = stratified_subset_index(np.array([files.labels[i] for i in plan["train"]]), cfg.subset,
                                           cfg.split_seed)
            plan["train"] = [plan["train"][k] for k in keep]
    size = _photo_size(cfg, preprocessing, default_size, files.paths + (test_files.paths if test_files else []))
    stream, resizing = _streamer(cfg, preprocessing, size)

    def make(source_files: LabelledFiles, index: list[int] | None = None) -> StreamingSet:
        index = list(range(len(source_files.paths))) if index is None else index
        return stream([source_files.paths[i] for i in index], [source_files.labels[i] for i in index])

    if plan is None:
        train, val, test = make(files), None, make(test_files)
        rows = None
    else:
        train, val, test = make(files, plan["train"]), make(files, plan["val"]) if plan["val"] else None, \
            make(files, plan["test"])
        rows = split_rows(files, plan)
    if cfg.skip_bad_images:
        train, test = _drop_bad_images(train, "train", path, log), _drop_bad_images(test, "test", path, log)
        val = _drop_bad_images(val, "val", path, log) if val is not None else None
    total = sum(len(s) for s in (train, val, test) if s is not None)
    cache = cfg.cache if cfg.cache is not None else total * 3 * size * size <= MEMORY_LIMIT
    kind = {"imagefolder": "image folders", "classfolder": "class folders", "csv": "images listed in"}[source]
    description = f"{kind} {path}, images {resizing.resize} to {size}×{size}"
    if cache:
        log(f"decoding {total} images into memory ...")
        train, test = train.cache_in_memory(), test.cache_in_memory()
        val = val.cache_in_memory() if val is not None else None
        description += ", held in memory as uint8"
    return DataSplits(train=train, val=val, test=test, class_names=files.class_names, description=description,
                      split_rows=rows, **resizing.fields())


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


def load_splits(cfg: DataConfig, preprocessing=None, log=print, default_size: int = 32) -> DataSplits:
    """Read the dataset `cfg` names and carve the stratified validation split out of train.

    `preprocessing` (a backbone weights' Preprocessing) sets the size and resize mode of
    streamed images unless `cfg` names them; photos for a model trained from scratch are
    resized to `default_size` (the model's input size) unless they all share one size.
    """
    source = cfg.source
    path = Path(cfg.path).expanduser() if cfg.path else None
    if path is None and source in ("auto", "cifar100"):
        source, path = "cifar100", default_cache_dir()
    elif path is None:
        raise DataError(f"data.source '{source}' needs a path (--data PATH)")
    elif not path.exists():
        raise DataError(f"{path}: data folder does not exist")
    elif not path.is_dir() and not (source in ("auto", "csv") and path.suffix.lower() == ".csv"):
        raise DataError(f"{path}: expected a folder (or a .csv file of path,label), found a file")
    if source == "auto":
        source = detect_source(path)
    if source in LISTED:
        splits = _listed_splits(cfg, path, source, preprocessing, log)
        return _finish(cfg, splits)
    if source in PHOTOS:
        return _finish(cfg, _photo_splits(cfg, path, source, preprocessing, default_size, log))
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
    if splits.split_rows is not None:  # class folders: the validation split is drawn already
        return splits
    # With k folds the folds themselves are the validation sets (see experiment.py).
    splits.train, splits.val = holdout_split(splits.train, 0.0 if cfg.folds else cfg.val_fraction, cfg.split_seed)
    return splits
