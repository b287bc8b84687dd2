"""Reading a dataset into its splits: the source the table names (data/sources/), the images
sized and resized as the model's weights expect, and the stratified hold-out split.

Sources that list images (bird lists, photo folders, CSVs, Hugging Face tables) share the
helpers here: `streamed_splits` turns labelled image lists into streamed (or, when small, in-memory)
splits, drawing and saving cnnlab's train/val/test split where the data has none.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.config import DataConfig
from cnnlab.data.cifar import default_cache_dir
from cnnlab.data.classfolder import LabelledFiles, given_plan, read_split_file, split_rows, three_way_split
from cnnlab.data.images import DataSplits
from cnnlab.data.sources import detect_source, get_source, scheme_source
from cnnlab.datasources import SourceRequest
from cnnlab.data.split import holdout_split, stratified_subset, stratified_subset_index
from cnnlab.data.streaming import StreamingSet, default_workers, open_item
from cnnlab.errors import DataError

MEMORY_LIMIT = 1 << 30  # bytes of uint8 images under which listed images are held in memory


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

    def make(paths: list[Path], labels: torch.Tensor) -> StreamingSet:
        return StreamingSet(list(paths), labels, size=size, num_workers=workers, **resizing.fields())

    return make, resizing


def named_image_size(cfg: DataConfig, preprocessing) -> int:
    """The side images are resized to when the experiment or its weights say: data.image_size, else
    the pretrained weights' size; 0 when neither does (the images or the model then decide)."""
    return cfg.image_size or (preprocessing.size if preprocessing is not None else 0)


def _photo_size(cfg: DataConfig, preprocessing, default_size: int, items: list) -> int:
    """The side images are resized to: asked for, the weights', the images' own (one square size), or the model's."""
    named = named_image_size(cfg, preprocessing)
    if named:
        return named
    from PIL import Image

    sizes = set()
    for item in items:
        try:
            with Image.open(open_item(item)) as image:  # reads the header only
                sizes.add(image.size)
        except Exception:  # a broken file is named when it is decoded
            continue
        if len(sizes) > 1:
            break
    if len(sizes) == 1 and len({*next(iter(sizes))}) == 1:
        return next(iter(sizes))[0]
    return default_size


def split_plan(cfg: DataConfig, files: LabelledFiles, where: Path | str) -> dict[str, list[int]]:
    """cnnlab's train/val/test split of images that come without one: the saved split.csv that
    data.split_file names, else a stratified, seeded draw (train narrowed to data.subset)."""
    if cfg.split_file:
        plan = read_split_file(Path(cfg.split_file).expanduser(), files)
    elif files.given_split is not None:  # a CSV with its own split column
        plan = given_plan(files, val_fraction=0.0 if cfg.folds else cfg.val_fraction, seed=cfg.split_seed)
    else:
        plan = three_way_split(files, val_fraction=0.0 if cfg.folds else cfg.val_fraction,
                               test_fraction=cfg.test_fraction, seed=cfg.split_seed)
    if not plan["test"]:
        raise DataError(f"{where}: no test split (data.test_fraction is 0); set data.test_fraction > 0")
    if cfg.subset:  # drawn here, so split.csv lists the training images actually used
        labels = files.label_matrix(plan["train"]) if files.multilabel else np.array([files.labels[i]
                                                                                       for i in plan["train"]])
        keep = stratified_subset_index(labels, cfg.subset, cfg.split_seed)
        plan["train"] = [plan["train"][k] for k in keep]
    return plan


def streamed_splits(req: SourceRequest, kind: str, train: LabelledFiles, *, test: LabelledFiles | None = None,
                    val: LabelledFiles | None = None, cache: bool | None = None, size: int = 0) -> DataSplits:
    """Labelled image lists → splits decoded by workers, held in memory when small (`cache`: None decides).

    With `test`, the data's own split is used (a validation split is drawn from train later unless
    `val` is given); without, cnnlab's split is drawn (or read from data.split_file) and saved as split.csv.
    `kind` opens the description ("class folders", ...); `size` (0: decided here) the side of the images.
    """
    cfg = req.cfg
    plan = None if test is not None else split_plan(cfg, train, req.path or req.address)
    lists = [train] + [x for x in (test, val) if x is not None]
    size = size or _photo_size(cfg, req.preprocessing, req.default_size, [p for x in lists for p in x.paths])
    stream, resizing = _streamer(cfg, req.preprocessing, size)

    def make(source_files: LabelledFiles, index: list[int] | None = None) -> StreamingSet:
        index = list(range(len(source_files.paths))) if index is None else index
        return stream([source_files.paths[i] for i in index], label_tensor(source_files, index))

    if plan is None:
        splits = {"train": make(train), "val": make(val) if val is not None else None, "test": make(test)}
        rows = None
    else:
        splits = {"train": make(train, plan["train"]), "val": make(train, plan["val"]) if plan["val"] else None,
                  "test": make(train, plan["test"])}
        rows = split_rows(train, plan)
    where = req.path or req.address
    if cfg.skip_bad_images:
        splits = {name: _drop_bad_images(split, name, where, req.log) if split is not None else None
                  for name, split in splits.items()}
    total = sum(len(s) for s in splits.values() if s is not None)
    if cache is None:
        cache = cfg.cache if cfg.cache is not None else total * 3 * size * size <= MEMORY_LIMIT
    description = f"{kind}, images {resizing.resize} to {size}×{size}"
    if cache:
        req.log(f"decoding {total} images into memory ...")
        splits = {name: split.cache_in_memory() if split is not None else None for name, split in splits.items()}
        description += ", held in memory as uint8"
    return DataSplits(train=splits["train"], val=splits["val"], test=splits["test"], class_names=train.class_names,
                      description=description, split_rows=rows, task="multilabel" if train.multilabel else "single",
                      **resizing.fields())


def label_tensor(files: LabelledFiles, index: list[int]) -> torch.Tensor:
    """The labels of `index`: int64 class indices, or (multi-label) a float32 0/1 matrix, images × classes."""
    if files.multilabel:
        return torch.from_numpy(files.label_matrix(index).astype(np.float32))
    return torch.tensor([files.labels[i] for i in index], dtype=torch.long)


def _drop_bad_images(split: StreamingSet, name: str, path: Path | str, log) -> StreamingSet:
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

    The source is `cfg.source`, or the first source that detects `cfg.path` (data/sources/).
    `preprocessing` (a backbone weights' Preprocessing) sets the size and resize mode of
    streamed images unless `cfg` names them; photos for a model trained from scratch are
    resized to `default_size` (the model's input size) unless they all share one size.
    """
    source, address = cfg.source, cfg.path or ""
    claimed = scheme_source(address) if address else None
    path = None
    if claimed is not None:
        if source not in ("auto", claimed.name):
            raise DataError(f"--data {address} is a '{claimed.name}' address, but data.source is '{source}'")
        source = claimed.name
    elif not address and source in ("auto", "cifar100"):
        source, path = "cifar100", default_cache_dir()
    elif not address:
        raise DataError(f"data.source '{source}' needs a path (--data PATH)")
    else:
        # absolute from here on: a relative --data (`labels.csv`, a user's most common way to type a path)
        # and the absolute one read the same images under the same names
        path = Path(address).expanduser().absolute()
        if not path.exists():
            raise DataError(f"{path}: data folder does not exist")
        if source == "auto":
            source = detect_source(path)
        entry = get_source(source)
        if path.is_file() and path.suffix.lower() not in entry.file_suffixes:
            wanted = f"a folder or a {' / '.join(entry.file_suffixes)} file" if entry.file_suffixes else "a folder"
            raise DataError(f"{path}: data.source '{source}' reads {wanted}, found a file")
    request = SourceRequest(cfg=cfg, path=path, address=str(path) if path is not None else address,
                            preprocessing=preprocessing, default_size=default_size, log=log)
    splits = _finish(cfg, get_source(source).read(request))
    splits.source = source  # what was read (detected for `auto`): the run records it
    return splits


def _finish(cfg: DataConfig, splits: DataSplits) -> DataSplits:
    if cfg.subset:
        splits.train = stratified_subset(splits.train, cfg.subset, cfg.split_seed)
    if splits.split_rows is not None or splits.val is not None:  # drawn already, or the data's own
        return splits
    # With k folds the folds themselves are the validation sets (see experiment.py).
    splits.train, splits.val = holdout_split(splits.train, 0.0 if cfg.folds else cfg.val_fraction, cfg.split_seed)
    return splits
