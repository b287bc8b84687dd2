"""A multi-label run's figures: precision–recall curves of its best and worst classes, and how many labels
its test images hold against how many it predicted. Drawn from arrays the run folder computed
(training/run_folder.py), so this module knows nothing of how they were measured."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.reporting.curves import _save, plt


def plot_pr_curves(path: Path, curves: list[dict], title: str) -> None:
    """One line per class: {'class', 'recall', 'precision', 'ap', 'group'} (group: best or worst)."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for curve in curves:
        style = "-" if curve["group"] == "best" else "--"
        ax.step(np.r_[0.0, curve["recall"]], np.r_[1.0, curve["precision"]], where="post", linestyle=style,
                label=f"{curve['class']} (AP {100 * curve['ap']:.1f}, {curve['group']})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    _save(fig, path)


def plot_label_counts(path: Path, true_counts: np.ndarray, predicted_counts: np.ndarray, title: str) -> None:
    """Images by their number of labels: the truth beside the prediction at the chosen thresholds."""
    top = int(max(true_counts.max(initial=0), predicted_counts.max(initial=0)))
    bins = np.arange(top + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.4
    ax.bar(bins - width / 2, np.bincount(true_counts, minlength=top + 1), width, label="true labels")
    ax.bar(bins + width / 2, np.bincount(predicted_counts, minlength=top + 1), width, label="predicted labels")
    ax.set_xticks(bins)
    ax.set_xlabel("labels an image")
    ax.set_ylabel("test images")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    ax.set_title(title)
    _save(fig, path)
