"""Summary charts of many runs: an ablation's steps and a comparison's variants, each run a dot."""
from __future__ import annotations

from cnnlab.reporting.curves import figure_bytes, plt
from cnnlab.reporting.tables import headline_figure, mean_std


def _runs_chart(labels: list[str], runs: list[list[float]], labs: list[float | None], *, title: str,
                lab_label: str, horizontal: bool, axis: str = "test accuracy") -> bytes:
    """Mean accuracy (%) of each entry with its ± std bar, every run as a dot, the lab's figure as a diamond."""
    height = max(2.5, 0.5 * len(labels) + 1.2) if horizontal else 4.5
    fig, ax = plt.subplots(figsize=(8, height))
    positions = list(range(len(labels)))
    for pos, values in zip(positions, runs):
        values = [100 * v for v in values]
        mean, std = mean_std(values)
        xy = (mean, pos) if horizontal else (pos, mean)
        err = {"xerr": std} if horizontal else {"yerr": std}
        ax.errorbar(*xy, **(err if len(values) > 1 else {}), fmt="o", color="C0", markersize=8, capsize=5,
                    label="mean ± std" if pos == 0 else None)
        dots = (values, [pos] * len(values)) if horizontal else ([pos] * len(values), values)
        ax.scatter(*dots, color="C0", alpha=0.35, s=18, label="each run" if pos == 0 else None)
        ax.annotate(f"{mean:.2f}", xy, textcoords="offset points", xytext=(0, 9) if horizontal else (9, 0),
                    ha="center" if horizontal else "left", va="bottom" if horizontal else "center", fontsize=8)
    lab_points = [(pos, 100 * lab) for pos, lab in zip(positions, labs) if lab is not None]
    if lab_points:
        pos, val = zip(*lab_points)
        ax.scatter(*((val, pos) if horizontal else (pos, val)), marker="D", color="C3", s=30, label=lab_label)
    if horizontal:
        ax.set_yticks(positions, labels)
        ax.margins(y=0.3)  # room for the first row's figure under the title
        ax.invert_yaxis()
        ax.set_xlabel(f"{axis} (%)")
        ax.grid(alpha=0.3, axis="x")
    else:
        ax.margins(y=0.12)
        ax.set_xticks(positions, labels, rotation=15, ha="right")
        ax.set_ylabel(f"{axis} (%)")
        ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title)
    return figure_bytes(fig)


def ablation_chart(steps: list[dict], *, title: str, lab_label: str = "lab") -> bytes:
    """Each cumulative step's test accuracy: the ablation's story in one picture."""
    return _runs_chart([f"{s['step']} {s['label']}" for s in steps], [s["test_acc"] for s in steps],
                       [s["lab"][1] if s.get("lab") else None for s in steps], title=title, lab_label=lab_label,
                       horizontal=False, axis=headline_figure(steps))


def compare_chart(rows: list[dict], *, title: str) -> bytes:
    """Each compared variant's test accuracy; the lab's figure only where its protocol was followed."""
    labs = [r["lab"]["mean_test_acc"] if r.get("lab") and r["lab"].get("same_protocol") else None for r in rows]
    return _runs_chart([r["name"] for r in rows], [r["test_acc"] for r in rows], labs, title=title,
                       lab_label="lab (same protocol)", horizontal=True, axis=headline_figure(rows))
