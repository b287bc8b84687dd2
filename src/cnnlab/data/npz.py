"""`.npz` datasets: `train.npz` and `test.npz`, each with `images` (uint8 N×H×W×3),
`labels` (integers) and optional `class_names` (the format of shared/data/cifar100-subset25)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cnnlab.data.images import DataSplits, ImageSet, check_labels, imageset_from_numpy
from cnnlab.errors import DataError


def _read(path: Path) -> tuple[ImageSet, list[str] | None]:
    try:
        # allow_pickle=False: an .npz with object arrays is refused instead of unpickled.
        with np.load(path, allow_pickle=False) as archive:
            missing = {"images", "labels"} - set(archive.files)
            if missing:
                raise DataError(f"{path}: missing key(s) {', '.join(sorted(missing))}; "
                                f"expected 'images' (uint8 N×H×W×3), 'labels' and optional 'class_names', "
                                f"found {', '.join(archive.files) or 'none'}")
            images, labels = archive["images"], archive["labels"]
            names = [str(n) for n in archive["class_names"]] if "class_names" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if images.shape[0] == 0:
        raise DataError(f"{path}: holds no images ('images' has shape {images.shape}); "
                        "expected at least one uint8 N×H×W×3 image")
    return imageset_from_numpy(images, labels, source=str(path)), names


def read_npz_folder(path: Path, num_classes: int | None = None) -> DataSplits:
    train, train_names = _read(path / "train.npz")
    test, test_names = _read(path / "test.npz")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"{path}: train images are {tuple(train.images.shape[1:])} but test images "
                        f"are {tuple(test.images.shape[1:])} (C, H, W)")
    names = train_names or test_names
    if names is None:
        names = [str(i) for i in range(int(train.labels.max()) + 1)]
    if train_names and test_names and train_names != test_names:
        raise DataError(f"{path}: class_names differ between train.npz and test.npz")
    check_labels(train.labels, len(names), source=str(path / "train.npz"))
    check_labels(test.labels, len(names), source=str(path / "test.npz"))
    return DataSplits(train=train, val=None, test=test, class_names=names, description=f"npz files in {path}")
