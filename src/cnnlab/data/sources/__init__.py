"""The built-in data sources, one module each (data/registry.py reads every module here).

A module defines `SOURCE = DataSource(...)` (or `SOURCES = [...]` for a family such as the three
bird layouts): a name, a line for `cnnlab list sources`, a detector for `--source auto` with its
place in the detection order, and a reader `read(request) -> DataSplits`. Keep the top of a module
free of heavy imports (torch, datasets): the configuration and `cnnlab list` import them all;
the reader imports what it needs when it runs.
"""
