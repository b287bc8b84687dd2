"""NumPy archives: train.npz + test.npz of uint8 images, labels and optional class names."""
from __future__ import annotations

from pathlib import Path

from cnnlab.datasources import DataSource, SourceRequest
from cnnlab.errors import DataError


def is_npz_folder(path: Path) -> bool:
    return (path / "train.npz").is_file() and (path / "test.npz").is_file()


def read(req: SourceRequest):
    from cnnlab.data.npz import read_npz_folder

    if not is_npz_folder(req.path):
        raise DataError(f"{req.path}: does not look like an 'npz' dataset ({SOURCE.description})")
    return read_npz_folder(req.path, req.cfg.num_classes)


SOURCE = DataSource("npz", "train.npz + test.npz with images (uint8 N×H×W×3), labels, optional class_names",
                    read=read, detect=is_npz_folder, order=20)
