"""Learning curves drawn from `metrics.csv` files, never from objects in memory."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed on servers or in CI
# Text is drawn as written: a class, run or experiment name with two '$' (a folder called "US$ bill $5")
# would otherwise be parsed as TeX math, and one with an unmatched TeX command would fail the figure.
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cnnlab.fileio import atomic_write_bytes  # noqa: E402
from cnnlab.reporting.metrics import read_metrics  # noqa: E402


def figure_bytes(fig) -> bytes:
    """The figure as PNG bytes (and closed): for files, and for figures inlined in a report."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _save(fig, path: Path) -> None:
    atomic_write_bytes(path, figure_bytes(fig))


def plot_learning_curves(metrics_csv: Path, out_png: Path, title: str = "", test: dict | None = None) -> Path:
    """Loss and accuracy (in %) per epoch, train and validation, side by side; the test figures marked."""
    rows = read_metrics(metrics_csv)
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # multi-label: validation mAP (no training mAP: a training epoch measures right yes/no decisions only)
    lead = ("map", "validation mAP (%)") if rows and "val_map" in rows[0] else ("acc", "accuracy (%)")
    for ax, metric, label, scale in ((axes[0], "loss", "loss", 1), (axes[1], *lead, 100)):
        if not rows or f"train_{metric}" in rows[0]:
            ax.plot(epochs, [scale * r[f"train_{metric}"] for r in rows], label="train", marker=".")
        val = [r[f"val_{metric}"] for r in rows]
        if any(v is not None for v in val):
            ax.plot(epochs, [None if v is None else scale * v for v in val], label="validation", marker=".")
        if test is not None and test.get(metric) is not None:
            ax.plot([test.get("epoch", epochs[-1])], [scale * test[metric]], marker="*", markersize=12,
                    linestyle="none", color="black", label=f"test ({scale * test[metric]:.2f})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    _mark_phase_changes(axes, rows)
    fig.suptitle(title or "learning curves")
    _save(fig, out_png)
    return out_png


def _mark_phase_changes(axes, rows: list[dict]) -> None:
    for prev, row in zip(rows, rows[1:]):
        if row.get("phase") != prev.get("phase"):
            for ax in axes:
                ax.axvline(row["epoch"] - 0.5, color="grey", linestyle="--", linewidth=1)


def plot_overlay(curves: dict[str, list[Path]], out_png: Path, metric: str = "val_acc",
                 title: str = "") -> Path:
    """One line per label: the mean over its runs' `metric`, with a min-max band."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, paths in curves.items():
        series = [[r[metric] for r in read_metrics(p)] for p in paths]
        length = min(len(s) for s in series)
        by_epoch = list(zip(*[s[:length] for s in series]))
        epochs = range(1, length + 1)
        scale = 1 if metric.endswith("loss") else 100
        by_epoch = [[scale * x for x in v] for v in by_epoch]
        mean = [sum(v) / len(v) for v in by_epoch]
        # markers too: a one-epoch curve is a single point, which a line alone does not draw
        line, = ax.plot(epochs, mean, label=f"{label} (n={len(series)})", marker="o", markersize=3)
        if len(series) > 1:
            ax.fill_between(epochs, [min(v) for v in by_epoch], [max(v) for v in by_epoch],
                            color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel({"val_acc": "validation accuracy (%)", "val_loss": "validation loss",
                   "val_bal_acc": "validation balanced accuracy (%)", "val_macro_f1": "validation macro-F1 (%)",
                   "val_map": "validation mAP (%)",
                   "train_acc": "training accuracy (%)", "train_loss": "training loss"}.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or metric)
    _save(fig, out_png)
    return out_png
