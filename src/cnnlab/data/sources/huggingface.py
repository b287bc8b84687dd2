"""Hugging Face datasets (data/hub.py reads them): by name from the Hub, a `save_to_disk` folder,
or a folder of Parquet / Arrow files."""
from __future__ import annotations

from pathlib import Path

from cnnlab.datasources import DataSource, SourceRequest
from cnnlab.errors import DataError


def read_tables(kind: str, opener):
    def read(req: SourceRequest):
        from cnnlab.data import hub
        from cnnlab.data.classfolder import LabelledFiles
        from cnnlab.data.loading import streamed_splits

        where = req.address
        roles = hub.assign_splits(opener(req), where, req.log)
        image, label = hub.find_columns(roles["train"].features, req.cfg.image_column, req.cfg.label_column, where)
        for role, table in roles.items():  # every split must have the columns the training split has
            missing = [c for c in (image, label) if c not in table.features]
            if missing:
                raise DataError(f"{where}: the {role} split has no column {', '.join(missing)}; "
                                    f"its columns: {hub.described(table.features)}")
        names = hub.class_names_of(roles, label, where)
        if "val" in roles and "test" not in roles:
            req.log(f"{where}: no test split, so cnnlab draws train/val/test from the train split (saved as "
                    "split.csv); the dataset's validation split is not used")
            del roles["val"]
        files = {}
        multilabel = hub.is_multilabel(roles["train"].features[label])
        for role, table in roles.items():
            items, labels = hub.labelled_rows(table, role, image, label, names, where)
            files[role] = LabelledFiles(items, labels, names, root=None, multilabel=multilabel)
        return streamed_splits(req, f"{kind} {where} (images: '{image}', labels: '{label}')", files["train"],
                               test=files.get("test"), val=files.get("val"))

    return read


def _hub(req: SourceRequest):
    from cnnlab.data.hub import open_hub

    return open_hub(req.address)


def _saved(req: SourceRequest):
    from cnnlab.data.hub import open_saved

    return open_saved(req.path)


def _tables(req: SourceRequest):
    from cnnlab.data.hub import open_tables

    return open_tables(req.path)


def is_saved(path: Path) -> bool:
    from cnnlab.data.hub import is_saved_dataset

    return is_saved_dataset(path)


def has_tables(path: Path) -> bool:
    from cnnlab.data.hub import is_table_folder

    return is_table_folder(path)


SOURCES = [
    DataSource("hf", "a Hugging Face Hub dataset: --data hf:OWNER/NAME[:CONFIG] (pip install 'cnnlab[hf]'; "
               "downloaded and cached by the datasets library)", read=read_tables("Hugging Face dataset", _hub),
               scheme="hf"),
    DataSource("hf-disk", "a folder written by Hugging Face datasets' save_to_disk (Image + ClassLabel columns)",
               read=read_tables("saved Hugging Face dataset", _saved), detect=is_saved, order=40),
    DataSource("parquet", "Parquet or Arrow files (a folder, its data/, or one file); splits from the file names",
               read=read_tables("tables", _tables), detect=has_tables, order=45,
               file_suffixes=(".parquet", ".arrow")),
]
