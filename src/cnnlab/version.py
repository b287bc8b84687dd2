"""The package version, importable without importing torch (the CLI's `--version` and `--help`)."""
__version__ = "0.15.0"
