"""Your own photos: a folder of class folders, or a CSV of `path,label`, split for you.

    PHOTOS/<class>/*.jpg|png|webp|bmp|gif|tif     any sizes, formats and modes
    labels.csv                                    path,label rows (paths relative to the CSV)

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


def read_labels_csv(csv_path: Path) -> LabelledFiles:
    """`path,label` rows (a header row is optional), or `path,label,split` under that header (the split is then
    the CSV's own: train / val / test, as `cnnlab audit --write-split` writes it); paths relative to the CSV's
    folder."""
    root = csv_path.parent
    text = read_text_file(csv_path, what="labels CSV", error=DataError)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise DataError(f"{csv_path}: cannot read it as CSV ({exc})") from None
    header = [c.strip().lower() for c in rows[0]] if rows else []
    columns = 3 if header == ["path", "label", "split"] else 2
    if header in (["path", "label"], ["path", "label", "split"]):
        rows = [None, *rows[1:]]  # keep line numbers
    entries, given = [], []
    for number, row in enumerate(rows, start=1):
        if row is None or not any(cell.strip() for cell in row):
            continue
        if len(row) != columns:
            raise DataError(f"{csv_path}:{number}: expected {columns} columns "
                            f"{'path,label,split' if columns == 3 else 'path,label'}; got {len(row)}"
                            + ("" if columns == 3 or len(row) != 3 else
                               " (a split column needs the header row path,label,split)"))
        if columns == 3:
            split = row[2].strip()
            if split not in SPLITS:
                raise DataError(f"{csv_path}:{number}: split '{split}': expected one of {', '.join(SPLITS)}")
            given.append(split)
        relative, label = row[0].strip(), row[1].strip()
        path = confine(root, relative, where=f"{csv_path}:{number}")
        if not path.is_file():
            raise DataError(f"{csv_path}:{number}: image '{relative}' does not exist")
        if not label:
            raise DataError(f"{csv_path}:{number}: empty label")
        entries.append((path, label))
    names = sorted({label for _, label in entries})
    if len(names) < 2:
        raise DataError(f"{csv_path}: expected images of at least two labels, found {len(names)}")
    index = {name: i for i, name in enumerate(names)}
    return LabelledFiles([p for p, _ in entries], [index[l] for _, l in entries], names, root,
                         given_split=given if columns == 3 else None)


def given_plan(files: LabelledFiles, *, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """The CSV's own split; with no validation rows, a stratified, seeded share of its training rows."""
    plan: dict[str, list[int]] = {name: [] for name in SPLITS}
    for i, split in enumerate(files.given_split):
        plan[split].append(i)
    if not plan["val"] and val_fraction > 0 and plan["train"]:
        train = LabelledFiles([files.paths[i] for i in plan["train"]], [files.labels[i] for i in plan["train"]],
                              files.class_names, files.root)
        drawn = three_way_split(train, val_fraction=val_fraction, test_fraction=0.0, seed=seed)
        plan["train"], plan["val"] = ([plan["train"][k] for k in drawn[name]] for name in ("train", "val"))
    return plan


def three_way_split(files: LabelledFiles, *, val_fraction: float, test_fraction: float, seed: int
                    ) -> dict[str, list[int]]:
    """Stratified, seeded train/val/test indices; every class must have an image in each split."""
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
    return [{"path": files.key(i), "label": files.class_names[files.labels[i]], "split": name}
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
        if files.class_names[files.labels[index]] != row["label"] or row["split"] not in SPLITS:
            raise DataError(f"{split_file}:{number}: label or split differs from the data "
                            f"(expected label '{files.class_names[files.labels[index]]}' and one of {', '.join(SPLITS)})")
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
