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

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnnlab.errors import DataError


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


_TABLE: dict[str, DataSource] = {}
_BUILTINS_LOADED = [False]


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


def _load_builtins() -> None:
    """Import every module of cnnlab/data/sources/ once; each registers what it defines."""
    if _BUILTINS_LOADED[0]:
        return
    _BUILTINS_LOADED[0] = True
    package = importlib.import_module("cnnlab.data.sources")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        defined = getattr(module, "SOURCES", None) or ([module.SOURCE] if hasattr(module, "SOURCE") else [])
        for source in defined:
            register_source(source, replace=True)


def sources() -> dict[str, DataSource]:
    """The table, in detection order (then by name)."""
    _load_builtins()
    return dict(sorted(_TABLE.items(), key=lambda item: (item[1].order, item[0])))


def source_names() -> tuple[str, ...]:
    """Every name `data.source` accepts: auto, then the registered sources."""
    return ("auto", *sources())


def get_source(name: str) -> DataSource:
    table = sources()
    if name not in table:
        raise DataError(f"data.source '{name}' is not a known source; known: {', '.join(source_names())}")
    return table[name]


def describe_sources() -> dict[str, str]:
    return {"auto": "detect the layout of --data PATH (default: cifar100)",
            **{name: source.description for name, source in sources().items()}}


def scheme_source(address: str) -> DataSource | None:
    """The source claiming an address such as `hf:OWNER/NAME`, if any."""
    scheme, colon, _ = address.partition(":")
    if not colon or len(scheme) < 2:  # C:\\... on Windows is a path
        return None
    return next((s for s in sources().values() if s.scheme == scheme), None)


def detect_source(path: Path) -> str:
    """The first registered source (in detection order) whose detector takes `path`."""
    for name, source in sources().items():
        if source.detect is not None and source.detect(path):
            return name
    described = "; ".join(f"{name} ({s.description})" for name, s in sources().items() if s.detect is not None)
    raise DataError(f"{path}: no dataset layout recognised; expected one of: {described}")
