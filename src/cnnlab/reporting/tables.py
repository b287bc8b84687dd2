"""Results as distributions: per-run rows, mean ± std, and the lab's figures beside them."""
from __future__ import annotations

import statistics
from typing import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single run)."""
    values = list(values)
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def pm(values: Sequence[float], *, percent: bool, digits: int = 2) -> str:
    """mean ± std; a single run shows its value alone (a "± 0.00" would claim a spread never measured)."""
    mean, std = mean_std(values)
    if len(list(values)) == 1:
        return f"{100 * mean:.{digits}f} %" if percent else f"{mean:.4f}"
    if percent:
        return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f} %"
    return f"{mean:.4f} ± {std:.4f}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """A plain-text (or Markdown) table with columns sized to their content."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _seconds(result: dict, key: str, fallback: str) -> float:
    return result.get(key, result.get(fallback, 0.0)) or 0.0


def lab_label(lab: dict) -> str:
    """A lab row names what the lab used unless the run followed the lab's own protocol and data."""
    runs = len(lab["runs"])
    if lab.get("same_protocol"):
        return f"lab ({runs} run{'s' if runs > 1 else ''}, same protocol)"
    differs = lab.get("differs") or []
    shown = ", ".join(differs[:3]) + (f" and {len(differs) - 3} more" if len(differs) > 3 else "")
    return f"lab: {lab['note']}" + (f"; differs: {shown}" if differs else "")


def spread(results: Sequence[dict], key: str) -> str:
    """mean ± std of `key` over runs, as a percentage; — when a run lacks it (one written before cnnlab 0.10)."""
    values = [r.get(key) for r in results]
    return "—" if not values or any(v is None for v in values) else pm(values, percent=True)


def seeds_rows(results: Sequence[dict], lab: dict | None) -> tuple[list[str], list[list[str]]]:
    """The lab's "Cuadro 1": each seed's test loss/accuracy, then mean ± std, then the lab's own mean.

    Timings: the median epoch (the first, warm-up epoch does not skew it), for each phase of a run in
    phases (a head on cached features takes milliseconds an epoch, a fine-tune minutes: one median of
    both would describe neither), and the feature extraction (computing or reading a frozen backbone's
    cached features, once a run), apart. The lab's runs are its own, so they are not paired
    with cnnlab's seeds: they appear as one row of their own. Balanced accuracy and macro-F1
    weigh every class alike (training/scores.py); the lab reported neither.
    """
    header = ["seed", "test loss", "test accuracy", "balanced accuracy", "macro-F1", "median epoch (s)",
              "feature extraction (s)"]
    rows = []
    for r in results:
        rows.append([str(r["seed"]), f"{r['test_loss']:.4f}", pct(r["test_acc"]), pct(r.get("test_bal_acc")),
                     pct(r.get("test_macro_f1")), epoch_seconds([r]), f"{_seconds(r, 'one_off_time_s', 'one_off_time_s'):.1f}"])
    if len(results) > 1:
        rows.append(["mean ± std", pm([r["test_loss"] for r in results], percent=False),
                     pm([r["test_acc"] for r in results], percent=True), spread(results, "test_bal_acc"),
                     spread(results, "test_macro_f1"), epoch_seconds(results), ""])
    if lab:
        rows.append([lab_label(lab), f"{lab['mean_test_loss']:.4f}", pct(lab["mean_test_acc"]), "", "", "", ""])
    return header, rows


def epoch_seconds(results: Sequence[dict]) -> str:
    """The median epoch of the runs (their mean), each phase's apart when the runs trained in phases."""
    phases = [r.get("phase_median_epoch_time_s") or {} for r in results]
    if all(len(p) > 1 for p in phases) and all(list(p) == list(phases[0]) for p in phases):
        return " · ".join(f"{name} {statistics.fmean(p[name] for p in phases):.2f}" for name in phases[0])
    return f"{mean_std([_seconds(r, 'median_epoch_time_s', 'mean_epoch_time_s') for r in results])[0]:.2f}"


def seeds_table(results: Sequence[dict], lab: dict | None, *, markdown: bool = False) -> str:
    return render_table(*seeds_rows(results, lab), markdown=markdown)


def folds_rows(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """k-fold cross-validation: held-out fold accuracy and test accuracy of each fold's model."""
    header = ["fold", "held-out accuracy", "test loss", "test accuracy"]
    rows = [[str(i + 1), pct(r["final_val_acc"]), f"{r['test_loss']:.4f}", pct(r["test_acc"])]
            for i, r in enumerate(results)]
    rows.append(["mean ± std", pm([r["final_val_acc"] for r in results], percent=True),
                 pm([r["test_loss"] for r in results], percent=False),
                 pm([r["test_acc"] for r in results], percent=True)])
    return header, rows


def folds_table(results: Sequence[dict], *, markdown: bool = False) -> str:
    return render_table(*folds_rows(results), markdown=markdown)


def headline_figure(rows: Sequence[dict]) -> str:
    """What study rows' `test_acc` holds: "test accuracy", or "test mAP" where their `figure` names a multi-label
    experiment's mAP (ablation, compare, probe and tune rows keep it under that one key)."""
    return "test mAP" if rows and rows[0].get("figure") == "test_map" else "test accuracy"


def ablation_rows(rows: list[dict], alpha: float, *,
                  lab_same_protocol: bool = True) -> tuple[list[str], list[list[str]]]:
    """Each cumulative step: mean ± std, the lab's figure, and the gain over the previous step with its test.

    The lab's column says so when its protocol (50 epochs, all the data) is not the steps' own.
    """
    lab = "lab" if lab_same_protocol else "lab (own protocol)"
    header = ["step", "change", "model", headline_figure(rows), "test loss", lab, "gain", "Welch p",
              f"{100 * (1 - alpha):.0f} % CI of gain", "beyond noise?"]
    body = []
    for r in rows:
        cmp = r["vs_previous"]
        if cmp and len(r["test_acc"]) < 3:  # two runs a side: the gain is shown, a verdict would not be earned
            cmp = {**cmp, "p_value": None, "verdict": "n/a (< 3 runs)"}
        body.append([
            str(r["step"]), r["label"], r["model"], pm(r["test_acc"], percent=True),
            pm(r["test_loss"], percent=False), pct(r["lab"][1]) if r["lab"] else "—",
            f"{100 * cmp['gain']:+.2f} pts" if cmp else "—",
            ("—" if cmp is None else "n/a" if cmp["p_value"] is None else f"{cmp['p_value']:.3g}"),
            f"[{100 * cmp['ci_low']:+.2f}, {100 * cmp['ci_high']:+.2f}]" if cmp else "—",
            cmp["verdict"] if cmp else "—"])
    return header, body


def ablation_table(rows: list[dict], alpha: float, *, lab_same_protocol: bool = True, markdown: bool = False) -> str:
    return render_table(*ablation_rows(rows, alpha, lab_same_protocol=lab_same_protocol), markdown=markdown)


def compare_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Several experiments (and classic heads) over the same seeds.

    The lab's figures sit beside a variant only when it followed the lab's protocol on the lab's
    data; otherwise they follow the variant as a row of their own, naming what the lab used.
    """
    header = ["variant", "runs", headline_figure(rows), "balanced accuracy", "macro-F1",
              "test loss", "wall time / run (s)", "lab accuracy", "lab loss"]
    body = []
    for r in rows:
        lab = r["lab"]
        beside = bool(lab and lab.get("same_protocol"))
        figures = [pm(r[key], percent=True) if r.get(key) and None not in r[key] else "—"
                   for key in ("test_bal_acc", "test_macro_f1")]
        body.append([r["name"], str(len(r["test_acc"])), pm(r["test_acc"], percent=True), *figures,
                     pm(r["test_loss"], percent=False) if r["test_loss"] else "—",
                     f"{mean_std(r['wall_time_s'])[0]:.1f}", pct(lab["mean_test_acc"]) if beside else "—",
                     f"{lab['mean_test_loss']:.4f}" if beside else "—"])
        if lab and not beside:
            body.append([f"{lab_label(lab)} ({r['name']})", str(len(lab["runs"])), pct(lab["mean_test_acc"]), "—", "—",
                         f"{lab['mean_test_loss']:.4f}", "—", "—", "—"])
    return header, body


def compare_table(rows: list[dict], *, markdown: bool = False) -> str:
    return render_table(*compare_rows(rows), markdown=markdown)


def trust_rows(results: Sequence[dict]) -> tuple[list[str], list[list[str]]] | None:
    """Calibration, conformal coverage and the 'unknown' rule on the test split (trust/), mean ± std over the
    runs that measured them; None when none did (trained before cnnlab 0.13, or without a validation split)."""
    measured = [r for r in results if r.get("test_ece") is not None]
    if not measured:
        return None

    def figure(key: str, percent: bool) -> str:
        values = [r[key] for r in measured if r.get(key) is not None]
        return pm(values, percent=percent) if values else "—"

    header = ["figure on the test split", "uncalibrated (softmax of the logits)", "as predict answers"]
    rows = [["temperature (fitted on validation)", "1", figure("temperature", False)]]
    for key, label, percent in (("nll", "negative log-likelihood", False), ("brier", "Brier score", False),
                                ("ece", "expected calibration error (15 bins)", True),
                                ("adaptive_ece", "adaptive ECE (15 equal-mass bins)", True)):
        rows.append([label, figure(f"test_{key}_uncalibrated", percent), figure(f"test_{key}", percent)])
    for level in (80, 90, 95):
        rows.append([f"conformal sets at {level} %: coverage / mean size", "",
                     f"{figure(f'test_coverage_{level}', True)} / {figure(f'test_set_size_{level}', False)}"])
    rows.append(["'unknown' at reject rate 0.05 of validation: accepted / their accuracy", "",
                 f"{figure('test_accepted_share', True)} / {figure('test_accepted_acc', True)}"])
    rows.append(["area under the risk–coverage curve (lower is better)", "", figure("test_aurc", False)])
    return header, rows


# a multi-label run's test figures (multilabel/metrics.py) in the order its tables show them
MULTILABEL_FIGURES = (("test_map", "mAP"), ("test_micro_f1", "micro-F1"), ("test_macro_f1", "macro-F1"),
                      ("test_exact_match", "exact match"), ("test_hamming_loss", "Hamming loss"))


def is_multilabel(results: Sequence[dict]) -> bool:
    return bool(results) and results[0].get("task") == "multilabel"


def multilabel_seeds_rows(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """A multi-label experiment's seeds: the test loss, mAP, F1 at the validation-chosen thresholds, exact match
    and Hamming loss, then mean ± std."""
    header = ["seed", "test loss", *(label for _, label in MULTILABEL_FIGURES), "median epoch (s)"]
    rows = [[str(r["seed"]), f"{r['test_loss']:.4f}", *(pct(r.get(key)) for key, _ in MULTILABEL_FIGURES),
             epoch_seconds([r])] for r in results]
    if len(results) > 1:
        rows.append(["mean ± std", pm([r["test_loss"] for r in results], percent=False),
                     *(spread(results, key) for key, _ in MULTILABEL_FIGURES), epoch_seconds(results)])
    return header, rows


def multilabel_folds_rows(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """k-fold cross-validation of a multi-label experiment: held-out mAP (at the last epoch) and the test figures."""
    header = ["fold", "held-out mAP", "test loss", "test mAP", "test micro-F1"]
    rows = [[str(i + 1), pct(r.get("final_val_map")), f"{r['test_loss']:.4f}", pct(r["test_map"]),
             pct(r["test_micro_f1"])] for i, r in enumerate(results)]
    rows.append(["mean ± std", spread(results, "final_val_map"), pm([r["test_loss"] for r in results], percent=False),
                 spread(results, "test_map"), spread(results, "test_micro_f1")])
    return header, rows
