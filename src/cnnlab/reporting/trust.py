"""The figures of a run's trust.json: a reliability diagram (before and after the temperature) and the
risk–coverage curve of its 'unknown' rule, drawn from the file's numbers (trust/fitted.trust_figures)."""
from __future__ import annotations

from pathlib import Path

import cnnlab.layout as layout
from cnnlab.reporting.curves import _save, plt


def plot_reliability(curves: dict, out_png: Path, *, title: str = "") -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    figures = curves["figures"]
    split = curves["split"]
    for ax, key, label, ece in ((axes[0], "reliability_uncalibrated", "softmax of the logits",
                                 figures.get(f"{split}_ece_uncalibrated")),
                                (axes[1], "reliability", f"after temperature {curves['temperature']:.3g}"
                                 if curves["calibration"] == "temperature" else "uncalibrated (train.calibration: none)",
                                 figures.get(f"{split}_ece"))):
        bins = [b for b in curves[key] if b["images"]]
        centres = [(b["low"] + b["high"]) / 2 for b in bins]
        width = curves[key][0]["high"] - curves[key][0]["low"]
        ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.95, color="tab:blue", alpha=0.75,
               label="accuracy of the bin")
        ax.plot(centres, [b["confidence"] for b in bins], "o", color="tab:red", markersize=4,
                label="mean confidence of the bin")
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfectly calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top class probability)")
        ax.set_title(f"{label}\nECE {100 * ece:.2f} %" if ece is not None else label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy on the {split} split")
    axes[0].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save(fig, out_png)


def plot_risk_coverage(curves: dict, out_png: Path, *, title: str = "") -> None:
    points = curves["risk_coverage"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot([100 * p["coverage"] for p in points], [100 * p["accuracy"] for p in points], marker=".")
    figures, split = curves["figures"], curves["split"]
    share = figures.get(f"{split}_accepted_share")
    accuracy = figures.get(f"{split}_accepted_acc")
    if share is not None and accuracy is not None:
        ax.plot([100 * share], [100 * accuracy], "*", markersize=12, color="black",
                label=f"the rule at reject rate {curves['reject_rate']:g}: {100 * share:.1f} % accepted, "
                      f"{100 * accuracy:.1f} % right")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel(f"share of {split} images accepted (%), most familiar first by {curves['reject_score']}")
    ax.set_ylabel("accuracy of the accepted (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, out_png)


def plot_trust(folder: Path, curves: dict, *, title: str = "") -> None:
    plot_reliability(curves, folder / layout.RELIABILITY_FIGURE, title=f"{title}: reliability" if title else "")
    plot_risk_coverage(curves, folder / layout.RISK_COVERAGE_FIGURE, title=f"{title}: risk–coverage" if title else "")
