"""`--write-split FILE.csv`: the audited split as a new `path,label,split` CSV; nothing of the data is touched.

Dropped: the flagged training and validation images (with `--relabel`, kept under their suggested label), the
training or validation copy of each pair across splits (test's copy stays), and the second image of each
exact or near-exact pair inside one split. The test split is never changed: an accuracy on the audited data
is then comparable to one on the original (its flagged images are in label_issues.csv, for you to look at).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.fileio import atomic_write_text
from cnnlab.studies.audit.duplicates import SPLIT_ORDER

SAME_SPLIT_KINDS = {"exact", "near", "mirrored"}  # within one split, only copies are dropped: "similar" may be a series


def write_split(path: Path, pooled, issues: list[int], probabilities: np.ndarray, pairs: list, *,
                relabel: bool) -> dict:
    root = path.parent
    relative = []
    for item in pooled.paths:
        try:
            relative.append(item.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            raise ConfigError(f"--write-split {path}: {item} is not inside {root}; paths in a CSV are relative to "
                              "its folder, so write it in the data folder's parent (or the data folder)") from None
    dropped: dict[int, str] = {}
    labels = pooled.labels.copy()
    relabelled = 0
    for i in issues:
        if pooled.splits[i] == "test":
            continue
        if relabel:
            labels[i] = int(probabilities[i].argmax())
            relabelled += 1
        else:
            dropped[i] = "label issue"
    for pair in pairs:
        a, b = pair.first, pair.second
        if pooled.splits[a] != pooled.splits[b]:
            # the training copy goes (or, against test, the validation copy): the test split's always stays
            drop = a if SPLIT_ORDER[pooled.splits[a]] > SPLIT_ORDER[pooled.splits[b]] else b
            dropped.setdefault(drop, "leaked duplicate")
        elif pair.kinds & SAME_SPLIT_KINDS and pooled.splits[a] != "test" and a not in dropped:
            dropped.setdefault(b, "duplicate")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for i, name in enumerate(relative):
        if i not in dropped:
            writer.writerow([name, pooled.class_names[labels[i]], pooled.splits[i]])
    atomic_write_text(path, buffer.getvalue())
    reasons = {reason: sum(r == reason for r in dropped.values())
               for reason in ("label issue", "leaked duplicate", "duplicate")}
    return {"path": str(path), "kept": len(relative) - len(dropped), "dropped": len(dropped),
            "dropped_by_reason": reasons, "relabelled": relabelled}
