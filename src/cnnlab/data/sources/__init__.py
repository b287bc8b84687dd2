"""The built-in data sources, one module each, and the table of every source (built-in and registered).

A module defines `SOURCE = DataSource(...)` (or `SOURCES = [...]` for a family such as the three
bird layouts): a name, a line for `cnnlab list sources`, a detector for `--source auto` with its
place in the detection order, and a reader `read(request) -> DataSplits`. Keep the top of a module
free of heavy imports (torch, datasets): `cnnlab list` imports them all; the reader imports what it
needs when it runs. A new source's name goes into datasources.BUILTIN_SOURCES too (the configuration's
choices, read without importing this package; tests/test_sources.py checks the two agree).
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from cnnlab.datasources import DataSource, registered
from cnnlab.errors import DataError

_BUILTIN: dict[str, DataSource] = {}


def builtin_sources() -> dict[str, DataSource]:
    """This package's modules' sources (imported once, by name: a source added as a file is found)."""
    if not _BUILTIN:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{__name__}.{info.name}")  # a module of this package
            defined = getattr(module, "SOURCES", None) or ([module.SOURCE] if hasattr(module, "SOURCE") else [])
            _BUILTIN.update({source.name: source for source in defined})
    return dict(_BUILTIN)


def sources() -> dict[str, DataSource]:
    """The table, in detection order (then by name): built-in sources, and those registered at run time."""
    table = {**builtin_sources(), **registered()}
    return dict(sorted(table.items(), key=lambda item: (item[1].order, item[0])))


def get_source(name: str) -> DataSource:
    table = sources()
    if name not in table:
        raise DataError(f"data.source '{name}' is not a known source; known: {', '.join(('auto', *table))}")
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
