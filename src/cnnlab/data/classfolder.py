"""Your own photos: a folder of class folders, or a CSV of `path,label`, split for you.

    PHOTOS/<class>/*.jpg|png|webp|bmp|gif|tif     any sizes, formats and modes
    labels.csv                                    path,label rows (paths relative to the CSV)

Multi-label CSVs (several labels an image) come in two layouts, both detected:

    path,labels                 path,bird,feeder,squirrel
    a.jpg,bird;feeder           a.jpg,1,1,0
    b.jpg,                      b.jpg,0,0,0        (no label at all: a legitimate all-negative image)

the labels of a cell separated by `;` or `|` (or data.label_separator), or one 0/1 column per class
(all columns but path and split, or those data.label_columns names). Either may add a split column.

With no train/test split of its own, the images are split into train / validation / test,
stratified by class and seeded (`data.split_seed`, `data.val_fraction`, `data.test_fraction`).
The split is saved with the run as `split.csv` (path, label, split) so that it can be audited
and reused (`data.split_file`).
"""
from __future__ import annotations

# scikit-learn is imported inside the functions that draw a split: `cnnlab list` and `--help` stay quick.

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data.imagefolder import IMAGE_SUFFIXES
from cnnlab.fileio import confine
from cnnlab.data.split_memo import remembered
from cnnlab.errors import DataError
from cnnlab.fileio import read_text_file

SPLITS = ("train", "val", "test")


@dataclass
class LabelledFiles:
    paths: list  # image files (Path), or items with a `key` and an `open()` (a Hub dataset's rows: hub.HubImage)
    labels: list[int]
    class_names: list[str]
    root: Path | None  # paths in split files are written relative to it
    given_split: list[str] | None = None  # a CSV's own split column (train / val / test), one per image
    multilabel: bool = False  # labels are tuples of class indices (several an image, possibly none)

    def label_matrix(self, index: list[int] | None = None) -> np.ndarray:
        """The labels of `index` (default: all) as a 0/1 uint8 matrix, images × classes (multi-label)."""
        index = range(len(self.labels)) if index is None else index
        matrix = np.zeros((len(index), len(self.class_names)), dtype=np.uint8)
        for row, i in enumerate(index):
            matrix[row, list(self.labels[i])] = 1
        return matrix

    def label_text(self, index: int) -> str:
        """How split.csv writes image `index`'s label: its class, or its classes joined by ';'."""
        if self.multilabel:
            return ";".join(self.class_names[c] for c in self.labels[index])
        return self.class_names[self.labels[index]]

    def key(self, index: int) -> str:
        """How split.csv names image `index`: its path relative to the root, or the item's own key."""
        item = self.paths[index]
        return item.relative_to(self.root).as_posix() if isinstance(item, Path) else item.key


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def class_dirs(root: Path) -> list[Path]:
    """Sub-folders that hold at least one image (hidden ones ignored)."""
    return [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and _images_under(d)]


def is_class_folder(path: Path) -> bool:
    return path.is_dir() and len(class_dirs(path)) >= 2


def list_class_folder(root: Path) -> LabelledFiles:
    folders = class_dirs(root)
    if len(folders) < 2:
        raise DataError(f"{root}: expected at least two class folders holding images "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    paths, labels = [], []
    for label, folder in enumerate(folders):
        found = _images_under(folder)
        paths += found
        labels += [label] * len(found)
    return LabelledFiles(paths, labels, [f.name for f in folders], root)


LABEL_SEPARATORS = (";", "|")  # detected in a label cell when data.label_separator is not set
LABEL_HEADERS = ("label", "labels")


def read_labels_csv(csv_path: Path, *, separator: str | None = None, label_columns: list[str] | tuple = ()
                    ) -> LabelledFiles:
    """`path,label` rows (a header row is optional), or `path,label,split` under that header (the split is then
    the CSV's own: train / val / test, as `cnnlab audit --write-split` writes it); paths relative to the CSV's
    folder. Multi-label: a `labels` cell of several labels (`separator`, else `;` or `|` detected) or one 0/1
    column per class (`label_columns`, else every column of a `path,...` header but split)."""
    text = read_text_file(csv_path, what="labels CSV", error=DataError)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise DataError(f"{csv_path}: cannot read it as CSV ({exc})") from None
    header = [c.strip() for c in rows[0]] if rows else []
    lowered = [c.lower() for c in header]
    if label_columns or (lowered[:1] == ["path"] and len(lowered) >= 3
                         and lowered[1] not in LABEL_HEADERS and not (len(lowered) == 3 and lowered[2] == "split")):
        return _read_label_columns(csv_path, rows, header, list(label_columns))
    columns = 3 if lowered in (["path", "label", "split"], ["path", "labels", "split"]) else 2
    if lowered[:1] == ["path"] and lowered[1:2] and lowered[1] in LABEL_HEADERS:
        rows = [None, *rows[1:]]  # keep line numbers
    cells = [(number, row) for number, row in enumerate(rows, start=1)
             if row is not None and any(cell.strip() for cell in row)]
    for number, row in cells:
        if len(row) != columns:
            raise DataError(f"{csv_path}:{number}: expected {columns} columns "
                            f"{'path,label,split' if columns == 3 else 'path,label'}; got {len(row)}"
                            + ("" if columns == 3 or len(row) != 3 else
                               " (a split column needs the header row path,label,split)"))
    separator = separator or _detect_separator(csv_path, [(n, r[1]) for n, r in cells])
    multilabel = separator is not None or lowered[1:2] == ["labels"]
    entries, given = [], []
    for number, row in cells:
        if columns == 3:
            given.append(_split_cell(csv_path, number, row[2]))
        path = _image_cell(csv_path, number, row[0])
        cell = row[1].strip()
        if multilabel:
            labels = tuple(dict.fromkeys(part.strip() for part in cell.split(separator or ";") if part.strip()))
            entries.append((path, labels))
        elif not cell:
            raise DataError(f"{csv_path}:{number}: empty label")
        else:
            entries.append((path, cell))
    if multilabel:
        names = sorted({name for _, labels in entries for name in labels})
    else:
        names = sorted({label for _, label in entries})
    if len(names) < 2:
        raise DataError(f"{csv_path}: expected images of at least two labels, found {len(names)}")
    index = {name: i for i, name in enumerate(names)}
    labels = [tuple(sorted(index[n] for n in l)) if multilabel else index[l] for _, l in entries]
    return LabelledFiles([p for p, _ in entries], labels, names, csv_path.parent,
                         given_split=given if columns == 3 else None, multilabel=multilabel)


def _image_cell(csv_path: Path, number: int, cell: str) -> Path:
    relative = cell.strip()
    path = confine(csv_path.parent, relative, where=f"{csv_path}:{number}")
    if not path.is_file():
        raise DataError(f"{csv_path}:{number}: image '{relative}' does not exist")
    return path


def _split_cell(csv_path: Path, number: int, cell: str) -> str:
    split = cell.strip()
    if split not in SPLITS:
        raise DataError(f"{csv_path}:{number}: split '{split}': expected one of {', '.join(SPLITS)}")
    return split


def _detect_separator(csv_path: Path, cells: list[tuple[int, str]]) -> str | None:
    """The multi-label separator the label cells use (`;` or `|`), None when no cell holds one."""
    found = {sep: number for number, cell in reversed(cells) for sep in LABEL_SEPARATORS if sep in cell}
    if len(found) > 1:
        raise DataError(f"{csv_path}: label cells hold both ';' (line {found[';']}) and '|' (line {found['|']}); "
                        "name the one that separates labels with data.label_separator")
    return next(iter(found), None)


def _read_label_columns(csv_path: Path, rows: list[list[str]], header: list[str], asked: list[str]
                        ) -> LabelledFiles:
    """`path,<class>,<class>,...[,split]`: one 0/1 column per class (multi-label)."""
    lowered = [c.lower() for c in header]
    if lowered[:1] != ["path"]:
        raise DataError(f"{csv_path}:1: data.label_columns needs a header row starting with path; got "
                        f"{','.join(header) or 'nothing'}")
    names = asked or [c for c in header[1:] if c.lower() != "split"]
    missing = [n for n in names if n not in header]
    if missing:
        raise DataError(f"{csv_path}:1: data.label_columns names {', '.join(missing)}, not columns of the header "
                        f"({','.join(header)})")
    if len(names) < 2:
        raise DataError(f"{csv_path}:1: expected at least two label columns, found {', '.join(names) or 'none'}")
    position = {name: header.index(name) for name in names}
    split_at = lowered.index("split") if "split" in lowered else None
    paths, labels, given = [], [], []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{csv_path}:{number}: expected {len(header)} columns ({','.join(header)}); got {len(row)}")
        present = []
        for c, name in enumerate(names):
            value = row[position[name]].strip()
            if value not in ("0", "1"):
                raise DataError(f"{csv_path}:{number}: column '{name}' holds '{value}'; expected 0 or 1 (one 0/1 "
                                "column per class)")
            if value == "1":
                present.append(c)
        paths.append(_image_cell(csv_path, number, row[0]))
        labels.append(tuple(present))
        if split_at is not None:
            given.append(_split_cell(csv_path, number, row[split_at]))
    return LabelledFiles(paths, labels, names, csv_path.parent, given_split=given if split_at is not None else None,
                         multilabel=True)


def given_plan(files: LabelledFiles, *, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """The CSV's own split; with no validation rows, a stratified, seeded share of its training rows."""
    plan: dict[str, list[int]] = {name: [] for name in SPLITS}
    for i, split in enumerate(files.given_split):
        plan[split].append(i)
    if not plan["val"] and val_fraction > 0 and plan["train"]:
        train = LabelledFiles([files.paths[i] for i in plan["train"]], [files.labels[i] for i in plan["train"]],
                              files.class_names, files.root, multilabel=files.multilabel)
        drawn = three_way_split(train, val_fraction=val_fraction, test_fraction=0.0, seed=seed)
        plan["train"], plan["val"] = ([plan["train"][k] for k in drawn[name]] for name in ("train", "val"))
    return plan


def three_way_split(files: LabelledFiles, *, val_fraction: float, test_fraction: float, seed: int
                    ) -> dict[str, list[int]]:
    """Stratified, seeded train/val/test indices; every class must have an image in each split (multi-label:
    iterative stratification, each label's frequency kept within each split)."""
    if files.multilabel:
        return _multilabel_three_way(files, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    labels = np.asarray(files.labels)
    needed = 1 + (test_fraction > 0) + (val_fraction > 0)
    counts = Counter(files.labels)
    small = [f"{files.class_names[c]} ({n})" for c, n in sorted(counts.items()) if n < needed]
    if small:
        raise DataError(f"{files.root}: class(es) with too few images for a train/val/test split (each needs at "
                        f"least {needed}): {', '.join(small)}")
    try:
        drawn = remembered("three-way", labels, (val_fraction, test_fraction, seed),
                           lambda: _draw_three_way(labels, val_fraction, test_fraction, seed))
    except ValueError as exc:
        raise DataError(f"{files.root}: cannot split {len(labels)} images into train/val/test with "
                        f"data.val_fraction {val_fraction} and data.test_fraction {test_fraction} ({exc})") from None
    return {name: sorted(int(i) for i in part) for name, part in zip(SPLITS, drawn)}


def _multilabel_three_way(files: LabelledFiles, *, val_fraction: float, test_fraction: float, seed: int
                          ) -> dict[str, list[int]]:
    from cnnlab.data.split import multilabel_train_test

    matrix = files.label_matrix()
    counts = matrix.sum(0)
    needed = 1 + (test_fraction > 0) + (val_fraction > 0)
    small = [f"{files.class_names[c]} ({int(n)})" for c, n in enumerate(counts) if n < needed]
    if small:
        raise DataError(f"{files.root}: label(s) on too few images for a train/val/test split (each needs at least "
                        f"{needed}): {', '.join(small)}")

    def draw():
        index = np.arange(len(matrix))
        train, val, test = index, index[:0], index[:0]
        if test_fraction > 0:
            kept, held = multilabel_train_test(matrix, test_fraction, seed)
            train, test = index[kept], index[held]
        if val_fraction > 0:
            kept, held = multilabel_train_test(matrix[train], val_fraction / (1 - test_fraction), seed + 1)
            train, val = train[kept], train[held]
        return np.sort(train), np.sort(val), np.sort(test)

    drawn = remembered("three-way-multilabel", matrix, (val_fraction, test_fraction, seed), draw)
    return {name: sorted(int(i) for i in part) for name, part in zip(SPLITS, drawn)}


def _draw_three_way(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's draw: the test split first, then validation out of what remains."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, val, test = index, index[:0], index[:0]
    if test_fraction > 0:
        train, test = train_test_split(index, test_size=test_fraction, random_state=seed,
                                       stratify=labels if _can_stratify(labels, test_fraction) else None)
    if val_fraction > 0:
        # val_fraction is of all images; of what remains after the test split it is a larger share
        share = val_fraction / (1 - test_fraction)
        train, val = train_test_split(train, test_size=share, random_state=seed + 1,
                                      stratify=labels[train] if _can_stratify(labels[train], share) else None)
    return np.sort(train), np.sort(val), np.sort(test)


def _can_stratify(labels: np.ndarray, fraction: float) -> bool:
    counts = np.bincount(labels)
    present = counts[counts > 0]
    return present.min() >= 2 and round(fraction * len(labels)) >= len(present)


def split_rows(files: LabelledFiles, plan: dict[str, list[int]]) -> list[dict]:
    """The split as rows of split.csv: path (relative to the data root), label, split."""
    return [{"path": files.key(i), "label": files.label_text(i), "split": name}
            for name in SPLITS for i in plan[name]]


def read_split_file(split_file: Path, files: LabelledFiles) -> dict[str, list[int]]:
    """A saved split.csv applied to the same images: every row must name a known image and class."""
    where = {files.key(i): i for i in range(len(files.paths))}
    plan: dict[str, list[int]] = {name: [] for name in SPLITS}
    text = read_text_file(split_file, what="split file", error=DataError)
    try:
        rows = list(csv.DictReader(text.splitlines()))
    except csv.Error as exc:
        raise DataError(f"{split_file}: cannot read the split file ({exc})") from None
    for number, row in enumerate(rows, start=2):
        if set(row) != {"path", "label", "split"}:
            raise DataError(f"{split_file}: expected the columns path,label,split")
        index = where.get(row["path"])
        if index is None:
            raise DataError(f"{split_file}:{number}: '{row['path']}' is not an image of "
                            f"{files.root if files.root is not None else 'the dataset'}")
        if files.label_text(index) != row["label"] or row["split"] not in SPLITS:
            raise DataError(f"{split_file}:{number}: label or split differs from the data "
                            f"(expected label '{files.label_text(index)}' and one of {', '.join(SPLITS)})")
        plan[row["split"]].append(index)
    return plan


def list_image_folder(path: Path):
    """train/<class>/* and test/<class>/* as labelled file lists (test classes must be train classes)."""
    classes = [d.name for d in class_dirs(path / "train")]
    if not classes:
        raise DataError(f"{path / 'train'}: no class sub-folders with images found")
    unknown = sorted({d.name for d in class_dirs(path / "test")} - set(classes))
    if unknown:
        raise DataError(f"{path / 'test'}: classes not in {path / 'train'}: {', '.join(unknown)}")
    lists = []
    for split in ("train", "test"):
        paths, labels = [], []
        for label, name in enumerate(classes):
            folder = path / split / name
            found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
                if folder.is_dir() else []
            paths += found
            labels += [label] * len(found)
        if not paths:
            raise DataError(f"{path / split}: no images found (expected {path / split}/<class>/*.png or *.jpg)")
        lists.append(LabelledFiles(paths, labels, classes, path))
    return lists[0], lists[1]
