"""The audit's pictures: the first flagged images of each kind, captioned, for the page and for a quick look."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.reporting.audit import plot_captioned, side_by_side

SHOWN = 16  # images (or pairs) a picture shows; the CSVs list them all


def _short(name: str, width: int = 28) -> str:
    tail = name.replace("\\", "/").split("/")[-1]
    return tail if len(tail) <= width else "…" + tail[-(width - 1):]


def draw_thumbnails(folder: Path, pooled, issues: list[int], pairs: list, outliers: list[dict],
                    probabilities: np.ndarray) -> None:
    names = pooled.class_names
    if issues:
        shown = issues[:SHOWN]
        plot_captioned(folder / "label_issues.png", pooled.pixels(shown),
                       [f"{_short(pooled.names[i])} ({pooled.splits[i]})\ngiven: {names[pooled.labels[i]]} "
                        f"({100 * probabilities[i, pooled.labels[i]]:.0f} %)\nsuggested: "
                        f"{names[int(probabilities[i].argmax())]} ({100 * probabilities[i].max():.0f} %)"
                        for i in shown], title=f"label issues: the {len(shown)} least self-confident of {len(issues)}")
    if pairs:
        shown = pairs[:SHOWN // 2]
        images = side_by_side(pooled.pixels([p.first for p in shown]), pooled.pixels([p.second for p in shown]))
        plot_captioned(folder / "duplicates.png", images,
                       [f"{'+'.join(sorted(p.kinds))}: {pooled.splits[p.first]} | {pooled.splits[p.second]}\n"
                        f"{_short(pooled.names[p.first], 20)} | {_short(pooled.names[p.second], 20)}\n"
                        f"hash distance {p.hash_distance}, cosine {p.cosine:.3f}" for p in shown],
                       title=f"duplicates: the first {len(shown)} of {len(pairs)} pairs (leaks first)", cols=2)
    if outliers:
        shown = outliers[:SHOWN]
        plot_captioned(folder / "outliers.png", pooled.pixels([o["index"] for o in shown]),
                       [f"{_short(pooled.names[o['index']])} ({pooled.splits[o['index']]})\n"
                        f"label: {names[pooled.labels[o['index']]]}\n{o['kind']}: {o['value']:.3g}" for o in shown],
                       title=f"outliers: the first {len(shown)} of {len(outliers)}")
