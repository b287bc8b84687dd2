"""train/<class>/ + test/<class>/ image folders: the data's own split, any sizes and formats."""
from __future__ import annotations

from pathlib import Path

from cnnlab.datasources import DataSource, SourceRequest


def is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def read(req: SourceRequest):
    from cnnlab.data.classfolder import list_image_folder
    from cnnlab.data.loading import streamed_splits

    train, test = list_image_folder(req.path)
    return streamed_splits(req, f"image folders {req.path}", train, test=test)


SOURCE = DataSource("imagefolder", "train/<class>/* and test/<class>/* image folders (any sizes and formats)",
                    read=read, detect=is_image_folder, order=50)
