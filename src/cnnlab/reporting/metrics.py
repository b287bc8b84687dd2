"""`metrics.csv`: one row per epoch, rewritten atomically after every epoch.

Rewriting the whole (small) file, rather than appending, means a killed run never leaves
a half-written line, and a resumed run's file holds exactly the checkpointed epochs.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from cnnlab.errors import RunError
from cnnlab.fileio import atomic_write_text

# val_bal_acc / val_macro_f1: balanced accuracy and macro-F1 of the validation split (training/scores.py)
COLUMNS = ("epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "val_macro_f1", "lr",
           "epoch_time_s")
# a multi-label run's (multilabel/metrics.py, at 0.5): train_acc is the share of right yes/no decisions
MULTILABEL_COLUMNS = ("epoch", "phase", "train_loss", "train_acc", "val_loss", "val_map", "val_micro_f1",
                      "val_macro_f1", "val_exact_match", "val_hamming_loss", "lr", "epoch_time_s")


def write_metrics(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    columns = MULTILABEL_COLUMNS if rows and "val_map" in rows[0] else COLUMNS
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """Rows with numbers parsed; empty cells (no validation split) become None."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise RunError(f"{path}: no metrics file (did the run finish an epoch?)") from None

    def parse(key: str, value: str):
        if value in ("", None):
            return None
        if key == "phase":
            return value
        return int(value) if key == "epoch" else float(value)

    return [{k: parse(k, v) for k, v in row.items()} for row in rows]
