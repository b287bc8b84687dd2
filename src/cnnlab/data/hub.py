"""Hugging Face datasets: from the Hub by name, a folder written by `save_to_disk`, or Parquet / Arrow files.

Read through the `datasets` library (the `cnnlab[hf]` extra), which downloads and caches a Hub
dataset on a user's machine and honours `HF_HUB_OFFLINE=1`. Its tables are memory-mapped Arrow
files, so a dataset larger than memory is not loaded: each image is read by row and decoded by
the streaming workers (streaming.py) as a photo folder's files are, and held in memory as uint8
only when the decoded images fit in 1 GiB (as photo folders are).

The image and label columns are found from the features (the one `Image` column; the one
`ClassLabel` column, whose names become the class names) or named by `data.image_column` /
`data.label_column`. The dataset's own train / validation / test splits are used where they
exist; without a test split, cnnlab draws its saved stratified split as for a class folder.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

from cnnlab.errors import DataError

# the dataset's own split names, by the role cnnlab gives them
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "valid", "val", "dev"), "test": ("test",)}
TABLE_SUFFIXES = (".parquet", ".arrow")
INSTALL = 'pip install "cnnlab[hf]" (the Hugging Face datasets library)'


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading Hugging Face datasets, Parquet or Arrow files needs the datasets package: "
                        f"{INSTALL}") from None
    datasets.logging.set_verbosity_error()  # its progress lines and warnings would bury cnnlab's one line
    datasets.disable_progress_bars()
    return datasets


def _first_line(exc: Exception) -> str:
    """The first line of a library's message: cnnlab's errors stay one line."""
    return str(exc).splitlines()[0] if str(exc) else ""


class HubColumn:
    """One split's image column, memory-mapped, images left encoded (decoded by the workers)."""

    def __init__(self, dataset: Any, column: str, where: str, split: str):
        self.dataset = dataset.select_columns([column]).cast_column(column, _datasets().Image(decode=False))
        self.column, self.where, self.split = column, where, split
        self.fingerprint = getattr(dataset, "_fingerprint", "") or ""

    def encoded(self, row: int) -> dict:
        return self.dataset[row][self.column]


class HubImage:
    """One image of a Hub dataset: what a StreamingSet lists instead of a file path."""

    __slots__ = ("column", "row")

    def __init__(self, column: HubColumn, row: int):
        self.column, self.row = column, row

    @property
    def name(self) -> str:
        return f"{self.column.where} [{self.column.split}] row {self.row}"

    @property
    def key(self) -> str:
        """How split.csv names it: split/row."""
        return f"{self.column.split}/{self.row}"

    def identity(self) -> str:
        """What the feature cache keys it by: the table's fingerprint and the row."""
        return f"{self.column.fingerprint}:{self.column.split}:{self.row}"

    def open(self):
        """A file object of the encoded image (its bytes, or the file its path names)."""
        value = self.column.encoded(self.row)
        if value is None:
            raise DataError(f"{self.name}: no image in column '{self.column.column}'")
        if value.get("bytes"):
            return io.BytesIO(value["bytes"])
        if value.get("path") and os.path.isfile(value["path"]):
            return value["path"]
        raise DataError(f"{self.name}: the image has neither bytes nor a readable path ({value.get('path')!r})")


# ---------------------------------------------------------------------------- opening

def is_saved_dataset(path: Path) -> bool:
    """A folder written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()))


def table_files(path: Path) -> list[Path]:
    """Parquet / Arrow files of a folder (at its top, under data/ as on the Hub, or under a split's folder),
    or the file itself."""
    if path.is_file():
        return [path] if path.suffix.lower() in TABLE_SUFFIXES else []
    if not path.is_dir():
        return []
    found = []
    for suffix in TABLE_SUFFIXES:
        found += [p for p in path.glob(f"*{suffix}")] + [p for p in path.glob(f"*/*{suffix}")]
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts))


def is_table_folder(path: Path) -> bool:
    return bool(table_files(path))


def _split_of(relative: str) -> str:
    """The split a file belongs to, from the words of its path (train-0000.parquet, data/test/x.arrow)."""
    words = set(re.split(r"[^a-z]+", relative.lower()))
    for name, aliases in (("test", SPLIT_NAMES["test"]), ("validation", SPLIT_NAMES["val"])):
        if words & set(aliases):
            return name
    return "train"


def open_saved(path: Path) -> dict:
    datasets = _datasets()
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 — any library error is one line naming the folder
        raise DataError(f"{path}: cannot read it as a saved Hugging Face dataset ({type(exc).__name__}: "
                        f"{_first_line(exc)})") from None
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def open_tables(path: Path) -> dict:
    files = table_files(path)
    if not files:
        raise DataError(f"{path}: no .parquet or .arrow files found (at its top, under data/, or in a split's folder)")
    kinds = {f.suffix.lower() for f in files}
    if len(kinds) > 1:
        raise DataError(f"{path}: both Parquet and Arrow files found; keep one format in the folder")
    base = path if path.is_dir() else path.parent
    by_split: dict[str, list[str]] = {}
    for f in files:
        by_split.setdefault(_split_of(f.relative_to(base).as_posix()), []).append(str(f))
    builder = "parquet" if kinds == {".parquet"} else "arrow"
    try:
        return dict(_datasets().load_dataset(builder, data_files=by_split))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read the {builder} files ({type(exc).__name__}: "
                        f"{_first_line(exc)})") from None


def parse_address(address: str) -> tuple[str, str | None]:
    """hf:OWNER/NAME[:CONFIG] → (OWNER/NAME, CONFIG or None)."""
    body = address.split(":", 1)[1] if address.startswith("hf:") else address
    name, _, config = body.partition(":")
    # each part a Hub name (not '.', '..', nor starting with a dot or dash): hf: never reaches a local path
    if not re.fullmatch(r"[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?", name or "") or ".." in name:
        raise DataError(f"--data {address}: expected hf:OWNER/NAME or hf:OWNER/NAME:CONFIG (a Hub dataset; a local "
                        "folder is given as a path: --data FOLDER)")
    if Path(name).exists():  # the datasets library would read a local folder of that name instead of the Hub's
        raise DataError(f"--data {address}: '{name}' is a local path here, and hf: names a Hub dataset; give the "
                        f"folder itself: --data {name}")
    return name, config or None


def open_hub(address: str) -> dict:
    name, config = parse_address(address)
    datasets = _datasets()
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "") \
        not in ("", "0")
    try:
        return dict(datasets.load_dataset(name, config))
    except Exception as exc:  # noqa: BLE001 — the library's many errors, each turned into one line
        text = _first_line(exc) or type(exc).__name__
        cache = os.environ.get("HF_DATASETS_CACHE") or str(Path(os.environ.get("HF_HOME", "~/.cache/huggingface"))
                                                          / "datasets")
        if offline or "couldn't reach" in text.lower() or "connection" in type(exc).__name__.lower():
            raise DataError(f"{address}: not in the local Hugging Face cache ({cache}) and the Hub "
                            f"{'is switched off (HF_HUB_OFFLINE=1)' if offline else 'cannot be reached'}; "
                            "load it once online, or save it with save_to_disk and pass --data FOLDER") from None
        raise DataError(f"{address}: cannot load the dataset ({type(exc).__name__}: {text})") from None


# ---------------------------------------------------------------------------- columns and splits

def described(features) -> str:
    return ", ".join(f"{name} ({type(feature).__name__}{'' if type(feature).__name__ != 'Value' else ' ' + feature.dtype})"
                     for name, feature in features.items())


def find_columns(features, image_column: str | None, label_column: str | None, where: str) -> tuple[str, str]:
    """The image and label columns: named, or the one of the Image / ClassLabel feature type."""
    datasets = _datasets()
    found = described(features)

    def pick(asked: str | None, key: str, kind: tuple, fallback: tuple[str, ...]) -> str:
        if asked is not None:
            if asked not in features:
                raise DataError(f"{where}: data.{key} '{asked}' is not a column; columns: {found}")
            return asked
        typed = [name for name, feature in features.items() if isinstance(feature, kind)]
        if len(typed) == 1:
            return typed[0]
        if len(typed) > 1:
            raise DataError(f"{where}: {len(typed)} columns could be the {key.split('_')[0]}s ({', '.join(typed)}); "
                            f"name one with data.{key}; columns: {found}")
        named = [name for name in fallback if name in features]
        if named:
            return named[0]
        raise DataError(f"{where}: no {key.split('_')[0]} column found (a {kind[0].__name__} column"
                        f"{' or one named ' + ' / '.join(fallback) if fallback else ''}); name it with data.{key}; "
                        f"columns: {found}")

    image = pick(image_column, "image_column", (datasets.Image,), ())
    if not isinstance(features[image], datasets.Image):
        raise DataError(f"{where}: column '{image}' holds {described({image: features[image]})}, not images; "
                        f"columns: {found}")
    # one ClassLabel column; else one list of ClassLabels (multi-label: Sequence(ClassLabel)); else a named one
    class_labels = [name for name, f in features.items() if isinstance(f, datasets.ClassLabel)]
    label_lists = [name for name, f in features.items() if is_multilabel(f)
                   and isinstance(f.feature, datasets.ClassLabel)]
    if label_column is None and not class_labels and len(label_lists) == 1:
        label = label_lists[0]
    else:
        label = pick(label_column, "label_column", (datasets.ClassLabel,), ("label", "labels"))
    if label == image:
        raise DataError(f"{where}: the image and label columns are both '{image}'; columns: {found}")
    return image, label


def assign_splits(tables: dict, where: str, log) -> dict[str, Any]:
    """The dataset's splits by cnnlab's roles (train, val, test); others are named and left out."""
    roles: dict[str, Any] = {}
    used = set()
    for role, aliases in SPLIT_NAMES.items():
        name = next((a for a in aliases if a in tables), None)
        if name is not None:
            roles[role] = tables[name]
            used.add(name)
    if "train" not in roles:
        if len(tables) == 1:  # one split of another name: it is what there is to train on
            (name, table), = tables.items()
            roles["train"], used = table, {name}
        else:
            raise DataError(f"{where}: no 'train' split; splits: {', '.join(tables)}")
    left = [name for name in tables if name not in used]
    if left:
        log(f"{where}: split(s) {', '.join(left)} not used (cnnlab reads train, validation and test)")
    return roles


def is_multilabel(feature) -> bool:
    """A label column of several labels a row: a list (Sequence) of ClassLabels, integers or strings."""
    inner = getattr(feature, "feature", None)
    return inner is not None and not isinstance(feature, _datasets().Image) and isinstance(
        inner, (_datasets().ClassLabel, _datasets().Value))


def labelled_rows(table, split: str, image: str, label: str, class_names: list[str], where: str):
    """(HubImage per row, label indices) of one split: a ClassLabel's values are the indices already;
    integers or strings of another column are looked up among `class_names`. A list column (multi-label)
    gives each row a tuple of indices (an empty list: an image with no label)."""
    column = HubColumn(table, image, where, split)
    if is_multilabel(table.features[label]):
        indexed = isinstance(table.features[label].feature, _datasets().ClassLabel)
        index = {name: i for i, name in enumerate(class_names)}
        labels = []
        for row, values in enumerate(table[label]):
            if values is None:
                raise DataError(f"{where} [{split}] row {row}: no labels in column '{label}' (an image without a "
                                "label is an empty list, not a missing value)")
            labels.append(tuple(sorted({int(v) if indexed else index[str(v)] for v in values})))
        return [HubImage(column, row) for row in range(len(labels))], labels
    indexed = isinstance(table.features[label], _datasets().ClassLabel)
    index = {name: i for i, name in enumerate(class_names)}
    labels = []
    for row, value in enumerate(table[label]):
        if value is None or (indexed and value == -1):  # ClassLabel's "no label" (unlabelled Hub test splits)
            raise DataError(f"{where} [{split}] row {row}: no label in column '{label}' (unlabelled rows cannot "
                            "be trained or tested on)")
        labels.append(int(value) if indexed else index[str(value)])
    return [HubImage(column, row) for row in range(len(labels))], labels


def class_names_of(tables: dict, label: str, where: str) -> list[str]:
    """ClassLabel's names, else the sorted distinct values of the label column over every split."""
    datasets = _datasets()
    feature = next(iter(tables.values())).features[label]
    multilabel = is_multilabel(feature)
    if multilabel:
        feature = feature.feature
    if isinstance(feature, datasets.ClassLabel):
        return [str(n) for n in feature.names]
    if not isinstance(feature, datasets.Value) or not (feature.dtype.startswith(("int", "uint")) or
                                                       feature.dtype in ("string", "large_string")):
        raise DataError(f"{where}: label column '{label}' holds {described({label: feature})}; expected a "
                        "ClassLabel, integers or strings")
    values = set()
    for table in tables.values():
        cells = [v for cell in table[label] if cell is not None for v in cell] if multilabel else table[label]
        values |= {str(v) for v in cells if v is not None}
    numeric = all(re.fullmatch(r"-?\d+", v) for v in values)
    return sorted(values, key=(lambda v: int(v)) if numeric else None)
