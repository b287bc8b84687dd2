"""A folder of class folders of your own photos, without a split: cnnlab draws and saves one."""
from __future__ import annotations

from pathlib import Path

from cnnlab.datasources import DataSource, SourceRequest


def detect(path: Path) -> bool:
    from cnnlab.data.classfolder import is_class_folder

    return is_class_folder(path)


def read(req: SourceRequest):
    from cnnlab.data.classfolder import list_class_folder
    from cnnlab.data.loading import streamed_splits

    return streamed_splits(req, f"class folders {req.path}", list_class_folder(req.path))


# last: any folder with two sub-folders of images is one, so every specific layout is tried first
SOURCE = DataSource("classfolder", "<class>/* folders of your own photos, no split: train/val/test drawn for you",
                    read=read, detect=detect, order=90)
