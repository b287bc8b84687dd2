"""The one table of data sources: every name `data.source` accepts, what it reads, how it is detected.

It sits at the bottom of the layers (beside catalogue.py), so the configuration can check
`data.source` against it; the sources themselves are found at run time, by package name, in
`cnnlab/data/sources/` (as a plug-in registry finds its plug-ins), and register upwards into it.

A source is one module in `cnnlab/data/sources/` that defines `SOURCE` (or `SOURCES`, a list) of
`DataSource`: a name, a line for `cnnlab list`, a detector (`--source auto` tries them in
`order`, lowest first) and a reader that returns the splits. The configuration's choices, `cnnlab
list sources` and the detection order all read this table, so a source added as one file (or
registered at run time with `register_source`, as a test or a plug-in does) is accepted
everywhere at once. ARCHITECTURE.md walks through adding one.

This module and the source modules import nothing heavy at the top (no torch, no datasets):
`cnnlab list` and the configuration read the table in a blink; a reader imports what it needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable



@dataclass
class SourceRequest:
    """What a reader is handed: the data configuration, the path (None for an address such as
    `hf:OWNER/NAME`, which is in `address`), the model's weights' preprocessing, the side a model trained
    from scratch takes, and the log."""

    cfg: Any  # config.DataConfig
    path: Path | None
    address: str
    preprocessing: Any = None
    default_size: int = 32
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class DataSource:
    name: str
    description: str  # one line for `cnnlab list sources`
    read: Callable[[SourceRequest], Any]  # → data.images.DataSplits
    # True when `--source auto` should take this source for the path; None: never detected (named only)
    detect: Callable[[Path], bool] | None = None
    order: int = 100  # detection order: lowest first (specific layouts before generic ones)
    # an address prefix this source claims instead of a path (`hf` for --data hf:OWNER/NAME)
    scheme: str | None = None
    # the kinds of path it takes: a folder, or a file with one of these suffixes
    file_suffixes: tuple[str, ...] = field(default=())


_TABLE: dict[str, DataSource] = {}  # registered at run time; the built-in sources are in data/sources/

# The built-in sources' names (data/sources/, one module each), in the order `--source auto` tries them:
# the configuration's choices, read without importing the data package (tests/test_sources.py checks them
# against the sources the modules define).
BUILTIN_SOURCES = ("csv", "npz", "cifar100-folder", "hf-disk", "parquet", "imagefolder", "cub200-2011",
                   "cub200-2010", "cub-lab", "classfolder", "cifar100", "hf")


def register_source(source: DataSource, *, replace: bool = False) -> DataSource:
    """Add `source` to the table (its name must be new unless `replace`)."""
    if source.name == "auto":
        raise ValueError("'auto' is not a source name: it asks for detection")
    if source.name in _TABLE and not replace and _TABLE[source.name] is not source:
        raise ValueError(f"data source '{source.name}' is registered already")
    _TABLE[source.name] = source
    return source


def unregister_source(name: str) -> None:
    _TABLE.pop(name, None)


def registered() -> dict[str, DataSource]:
    """The sources registered at run time (plug-ins, a test's own); the built-in ones are data/sources/'s."""
    return dict(_TABLE)


def source_names() -> tuple[str, ...]:
    """Every name `data.source` accepts: auto, the built-in sources (catalogue.DATA_SOURCES, in detection
    order), then those registered at run time."""
    return ("auto", *BUILTIN_SOURCES, *(name for name in _TABLE if name not in BUILTIN_SOURCES))
