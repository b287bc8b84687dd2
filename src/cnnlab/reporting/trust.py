"""The figures of a run's trust.json: a reliability diagram (before and after the temperature) and the
risk–coverage curve of its 'unknown' rule, drawn from the file's numbers (trust/fitted.trust_figures).

Drawn when a report is written, not at the end of every run: two matplotlib figures cost a run about a second,
and trust.json holds every number they show."""
from __future__ import annotations

from cnnlab.reporting.curves import figure_bytes, plt


def reliability_png(curves: dict, *, title: str = "") -> bytes:
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
    return figure_bytes(fig)


def risk_coverage_png(curves: dict, *, title: str = "") -> bytes:
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
    return figure_bytes(fig)
