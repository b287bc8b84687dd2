"""Caltech-UCSD Birds in the three layouts users have, as lists of (image path, label).

- `cub-lab`: the lab's: class folders `NNN.Name/` beside `train.txt` and `test.txt`;
- `cub200-2010`: CUB-200 as distributed: `images/` plus `lists/train.txt`, `lists/test.txt`;
- `cub200-2011`: CUB-200-2011 as distributed: `images.txt`, `image_class_labels.txt`,
  `train_test_split.txt`, `classes.txt`, `images/`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.data.listfile import ListEntry, parse_id_table, parse_image_list
from cnnlab.fileio import confine
from cnnlab.errors import DataError

LAYOUTS = ("cub-lab", "cub200-2010", "cub200-2011")


@dataclass
class ImageList:
    paths: list[Path]
    labels: list[int]


@dataclass
class ListedDataset:
    train: ImageList
    test: ImageList
    class_names: list[str]
    description: str


def detect_layout(path: Path) -> str | None:
    if (path / "images.txt").is_file() and (path / "train_test_split.txt").is_file():
        return "cub200-2011"
    if (path / "lists" / "train.txt").is_file() and (path / "images").is_dir():
        return "cub200-2010"
    if (path / "train.txt").is_file() and (path / "test.txt").is_file():
        return "cub-lab"
    return None


def _from_lists(root: Path, train_file: Path, test_file: Path, layout: str) -> ListedDataset:
    train = parse_image_list(train_file, root)
    test = parse_image_list(test_file, root)
    # The lab's rule: classes are the sorted unique folder names of the train list.
    class_names = sorted({e.class_name for e in train})
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [e for e in test if e.class_name not in index]
    if unknown:
        first = unknown[0]
        raise DataError(f"{test_file}:{first.line}: class '{first.class_name}' is not in the train list "
                        f"{train_file} ({len(unknown)} test image(s) of unknown classes)")

    def as_list(entries: list[ListEntry]) -> ImageList:
        return ImageList([e.path for e in entries], [index[e.class_name] for e in entries])

    return ListedDataset(as_list(train), as_list(test), class_names,
                         f"{layout} image lists in {root} ({len(train)} train / {len(test)} test listed)")


def _cub2011(root: Path) -> ListedDataset:
    images = parse_image_list(root / "images.txt", root / "images", with_ids=True)
    labels = parse_id_table(root / "image_class_labels.txt", columns=2, what="'IMAGE_ID CLASS_ID'")
    split = parse_id_table(root / "train_test_split.txt", columns=2, what="'IMAGE_ID IS_TRAINING'")
    classes = parse_id_table(root / "classes.txt", columns=2, what="'CLASS_ID CLASS_NAME'")
    try:
        class_ids = sorted(classes, key=int)
    except ValueError:
        raise DataError(f"{root / 'classes.txt'}: class ids must be integers") from None
    position = {cid: i for i, cid in enumerate(class_ids)}
    train, test = ImageList([], []), ImageList([], [])
    for image_id, entry in images:
        if image_id not in labels:
            raise DataError(f"{root / 'image_class_labels.txt'}: no class for image id {image_id} "
                            f"({root / 'images.txt'}:{entry.line})")
        if image_id not in split:
            raise DataError(f"{root / 'train_test_split.txt'}: no split for image id {image_id}")
        class_id, flag = labels[image_id][0], split[image_id][0]
        if class_id not in position:
            raise DataError(f"{root / 'image_class_labels.txt'}: image {image_id} has class id {class_id}, "
                            f"which {root / 'classes.txt'} does not define")
        if flag not in ("0", "1"):
            raise DataError(f"{root / 'train_test_split.txt'}: image {image_id}: expected 0 or 1, got {flag!r}")
        target = train if flag == "1" else test
        target.paths.append(entry.path)
        target.labels.append(position[class_id])
    if not train.paths or not test.paths:
        raise DataError(f"{root / 'train_test_split.txt'}: the split leaves no train or no test images")
    names = [classes[cid][0] for cid in class_ids]
    return ListedDataset(train, test, names, f"CUB-200-2011 in {root}")


def read_listed(path: Path, layout: str = "auto") -> ListedDataset:
    """Read any of the three layouts; `auto` detects it."""
    if not path.is_dir():
        raise DataError(f"{path}: data folder does not exist" if not path.exists() else f"{path}: not a folder")
    if layout == "auto":
        layout = detect_layout(path) or ""
        if not layout:
            raise DataError(f"{path}: no bird dataset layout recognised; expected train.txt + test.txt beside "
                            "class folders (cub-lab), images/ + lists/ (cub200-2010), or images.txt + "
                            "train_test_split.txt (cub200-2011)")
    if layout == "cub-lab":
        return _from_lists(path, path / "train.txt", path / "test.txt", layout)
    if layout == "cub200-2010":
        confine(path, "images/x", where=str(path))
        return _from_lists(path / "images", path / "lists" / "train.txt", path / "lists" / "test.txt", layout)
    if layout == "cub200-2011":
        return _cub2011(path)
    raise DataError(f"unknown bird layout '{layout}'; valid: auto, {', '.join(LAYOUTS)}")
