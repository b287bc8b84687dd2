"""Image list files (`train.txt`, `images.txt`, ...) parsed strictly and confined to their dataset.

Every line is checked: a relative path of the form CLASS_FOLDER/IMAGE (or `ID PATH` for
CUB-200-2011's files), inside the dataset folder once resolved (no `..`, no absolute
paths, no symlink escaping it), pointing at an existing file. Errors name the list file
and the line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import DataError
from cnnlab.fileio import confine, read_text_file


@dataclass(frozen=True)
class ListEntry:
    line: int
    relative: str  # as written, with forward slashes
    path: Path  # resolved, inside the dataset folder
    class_name: str  # the first folder of the relative path


def _read_lines(list_file: Path) -> list[str]:
    text = read_text_file(list_file, what="list file", error=DataError)
    if "\x00" in text:
        raise DataError(f"{list_file}: contains NUL bytes; expected one relative image path per line")
    return text.splitlines()


def parse_image_list(list_file: Path, root: Path, *, with_ids: bool = False, check_exists: bool = True
                     ) -> list[ListEntry] | list[tuple[str, ListEntry]]:
    """Parse a list of image paths relative to `root`, one per line (blank lines and # comments skipped).

    With `with_ids`, each line is `ID PATH` (CUB-200-2011's images.txt) and (id, entry) pairs are returned.
    """
    entries: list = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(_read_lines(list_file), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_file}:{number}"
        image_id = None
        if with_ids:
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DataError(f"{where}: expected 'ID PATH', got {line!r}")
            image_id, line = parts
        if any(ch in line for ch in "\t\r") or any(ord(ch) < 32 for ch in line):
            raise DataError(f"{where}: control characters in {line!r}; expected CLASS_FOLDER/IMAGE")
        parts = [p for p in line.replace("\\", "/").split("/") if p not in ("", ".")]
        if len(parts) < 2:
            raise DataError(f"{where}: expected CLASS_FOLDER/IMAGE, got {line!r}")
        path = confine(root, line, where=where)
        if check_exists and not path.is_file():
            raise DataError(f"{where}: image '{line}' does not exist under {root}")
        if line in seen:
            raise DataError(f"{where}: '{line}' is listed twice (first on line {seen[line]})")
        seen[line] = number
        entry = ListEntry(number, "/".join(parts), path, parts[0])
        entries.append((image_id, entry) if with_ids else entry)
    if not entries:
        raise DataError(f"{list_file}: no image paths in the list file")
    return entries


def parse_id_table(path: Path, *, columns: int, what: str) -> dict[str, list[str]]:
    """A whitespace-separated table keyed by its first column (CUB-200-2011's metadata files)."""
    table: dict[str, list[str]] = {}
    for number, raw in enumerate(_read_lines(path), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns:
            raise DataError(f"{path}:{number}: expected {what}, got {line!r}")
        if parts[0] in table:
            raise DataError(f"{path}:{number}: id {parts[0]} appears twice")
        table[parts[0]] = parts[1:]
    if not table:
        raise DataError(f"{path}: empty file; expected lines of {what}")
    return table

