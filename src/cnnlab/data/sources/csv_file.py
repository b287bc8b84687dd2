"""A CSV file of path,label rows (paths relative to it), split for you as class folders are."""
from __future__ import annotations

from pathlib import Path

from cnnlab.datasources import DataSource, SourceRequest
from cnnlab.errors import DataError


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def read(req: SourceRequest):
    from cnnlab.data.classfolder import read_labels_csv
    from cnnlab.data.loading import streamed_splits

    if not detect(req.path):
        raise DataError(f"{req.path}: data.source 'csv' reads a .csv file of path,label rows")
    files = read_labels_csv(req.path, separator=req.cfg.label_separator, label_columns=req.cfg.label_columns)
    return streamed_splits(req, f"images listed in {req.path}", files)


SOURCE = DataSource("csv", "a CSV file of path,label rows (paths relative to it), split like class folders; multi-label: "
                    "path,labels with bird;feeder cells, or one 0/1 column per class",
                    read=read, detect=detect, order=10, file_suffixes=(".csv",))
