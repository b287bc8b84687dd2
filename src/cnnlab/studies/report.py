"""`cnnlab report`: one page for a run, an experiment, an ablation or a comparison (or several side by side).

Everything on the page is read from the folders' own files (summary.json, results.json,
metrics.csv, per_class.csv, the PNGs ...), never recomputed, so the page says exactly what the
files say; each table names the file its numbers come from. `run`, `ablation` and `compare`
write `report.html` into their folder when they finish.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable

import cnnlab.layout as layout
from cnnlab.config import load_experiment, model_spec, parse_yaml
from cnnlab.errors import ConfigError, RunError
from cnnlab.fileio import atomic_write_text, read_json
from cnnlab.reporting.document import (Block, Document, Figure, Grid, Heading, Preformatted, Section, SideBySide,
                                       Table, Text)
from cnnlab.reporting.html import REPORT_MARKER, render_html
from cnnlab.reporting.markdown import render_markdown
from cnnlab.reporting.tables import (ablation_rows, compare_rows, epoch_seconds, folds_rows, headline_figure,
                                     is_multilabel,
                                     multilabel_folds_rows, multilabel_seeds_rows, pct, pm, seeds_rows,
                                     trust_rows)
from cnnlab.studies.layout import (describe_setup, experiment_setup, read_results, read_summary, step_dir,
                                   unit_names)
from cnnlab.version import __version__

GENERATOR = f"cnnlab {__version__} report"
FORMATS = ("html", "md")
TOP_PAIRS = 10  # most-confused pairs shown


# ----------------------------------------------------------------------------- what a folder is

def folder_kind(path: Path) -> str:
    """run (one seed), experiment (N seeds / K folds), ablation, compare or tune, finished; a clear error
    otherwise (the kinds themselves: cnnlab/layout.py)."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such folder (give a run, experiment, ablation or comparison folder)")
    kind = layout.folder_kind(path)
    unfinished = {
        "tune": (layout.STUDY_RESULTS, "the tuning study has not finished (no final.json); the same `cnnlab tune` "
                                       "command continues it"),
        "ablation": (layout.ABLATION_RESULTS, f"the ablation has not finished (no ablation.json); `cnnlab resume "
                                              f"{path}` finishes it"),
        "experiment": (layout.SUMMARY_FILE, f"the experiment has not finished (no summary.json); `cnnlab resume "
                                            f"{path}` finishes it"),
        "run": (layout.RESULTS_FILE, f"the run has not finished (no results.json); `cnnlab resume {path.parent}` "
                                     "finishes it"),
    }
    if kind == "comparison":
        return "compare"
    if kind in ("probe", "audit"):
        return kind
    if kind in unfinished:
        marker, message = unfinished[kind]
        if not (path / marker).is_file():
            raise RunError(f"{path}: {message}")
        return kind
    raise RunError(f"{path}: not a cnnlab folder: expected summary.json (experiment), results.json (run), "
                   "ablation.json (ablation) or compare.json (comparison)")


# ----------------------------------------------------------------------------- small readers

def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _figure(path: Path, caption: str) -> list[Figure]:
    return [Figure(path.read_bytes(), caption, path.name)] if path.is_file() else []


def _source(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- pieces of a run

def _interpretation_blocks(folder: Path, root: Path, runs: list[Path], what: str) -> list[Block]:
    """Confusion matrix, most-confused pairs, per-class table (of `folder`), top losses and Grad-CAM (per run)."""
    blocks: list[Block] = []
    if (folder / "confusion_matrix.csv").is_file():
        blocks.append(Heading("Which classes fail"))
        blocks += _figure(folder / "confusion_matrix.png", f"test confusion matrix, row-normalised ({what})")
    if (folder / "most_confused.csv").is_file():
        pairs = _csv_rows(folder / "most_confused.csv")[:TOP_PAIRS]
        if pairs:
            blocks.append(Table(["true class", "predicted as", "test images"],
                                [[p["true"], p["predicted"], p["count"]] for p in pairs],
                                caption=f"most-confused pairs ({what})",
                                source=_source(folder / "most_confused.csv", root)))
    if (folder / "per_class.csv").is_file():
        rows = _csv_rows(folder / "per_class.csv")
        blocks.append(Table(["class", "precision", "recall", "F1", "accuracy", "support"],
                            [[r["class"], pct(float(r["precision"])), pct(float(r["recall"])), pct(float(r["f1"])),
                              pct(float(r["accuracy"])), r["support"]] for r in rows],
                            caption=f"per-class figures on the test split ({what})",
                            source=_source(folder / "per_class.csv", root), tall=len(rows) > 15))
    losses = [f for run in runs for f in _figure(run / "top_losses.png", f"{run.name}: the test images with the "
                                                                           "highest loss (true / predicted, probability)")]
    if losses:
        blocks.append(Heading("Top losses"))
        blocks.append(losses[0])
        if len(losses) > 1:
            blocks.append(Text(f"The other runs' top losses: {', '.join(f'{r.name}/top_losses.png' for r in runs[1:])}.",
                               muted=True))
    cams = [f for run in runs for f in _figure(run / "gradcam.png", f"{run.name}: Grad-CAM, where the model looked")]
    if cams:
        blocks += [Heading("Grad-CAM"), Grid(cams) if len(cams) > 1 else cams[0]]
    return blocks


def _multilabel_blocks(runs: list[Path], root: Path, top: int = 10) -> list[Block]:
    """A multi-label experiment's classes: AP per class (mean over the runs), the most-missed and most-hallucinated
    classes (summed over the runs), precision–recall curves and the label counts (first run), top losses."""
    tables = [(run, _csv_rows(run / "per_class.csv")) for run in runs if (run / "per_class.csv").is_file()]
    blocks: list[Block] = []
    if tables:
        names = [r["class"] for r in tables[0][1]]

        def total(name: str, key: str) -> int:
            return sum(int(next(r for r in rows if r["class"] == name)[key]) for _, rows in tables)

        def mean_ap(name: str) -> float | None:
            values = [float(r["ap"]) for _, rows in tables for r in rows if r["class"] == name and r["ap"] != ""]
            return sum(values) / len(values) if values else None

        aps = {name: mean_ap(name) for name in names}
        first = {r["class"]: r for r in tables[0][1]}
        ordered = sorted(names, key=lambda n: (aps[n] is None, -(aps[n] or 0.0)))
        blocks += [Heading("Which classes fail"),
                   Table(["class", "AP", "precision", "recall", "F1", "threshold", "test positives"],
                         [[n, pct(aps[n]), pct(float(first[n]["precision"])), pct(float(first[n]["recall"])),
                           pct(float(first[n]["f1"])), f"{float(first[n]['threshold']):.3f}", first[n]["positives"]]
                          for n in ordered],
                         caption=f"per-class average precision, mean over {len(tables)} run(s); precision, recall, F1 "
                                 f"and the threshold (chosen on validation) of {tables[0][0].name}",
                         source=_source(tables[0][0] / "per_class.csv", root), tall=len(names) > 15)]
        for key, label in (("missed", "most-missed classes (a true label not predicted)"),
                           ("hallucinated", "most-hallucinated classes (a label predicted that is not there)")):
            counted = sorted(((total(n, key), n) for n in names), reverse=True)[:top]
            if any(count for count, _ in counted):
                blocks.append(Table(["class", f"test images, summed over {len(tables)} run(s)"],
                                    [[n, str(count)] for count, n in counted if count], caption=label,
                                    source=_source(tables[0][0] / "per_class.csv", root)))
    first_run = runs[0]
    figures = [*_figure(first_run / "pr_curves.png", f"{first_run.name}: precision–recall of the best and worst "
                                                     "classes"),
               *_figure(first_run / "label_counts.png", f"{first_run.name}: labels an image, true and predicted")]
    if figures:
        blocks.append(Grid(figures) if len(figures) > 1 else figures[0])
    losses = _figure(first_run / "top_losses.png", f"{first_run.name}: the test images with the highest loss "
                                                   "(summed binary cross-entropy; true / predicted labels)")
    if losses:
        blocks += [Heading("Top losses"), *losses]
    return blocks


def _trust_blocks(results: list[dict], runs: list[Path], root: Path, source: Path) -> list[Block]:
    """"Can I trust its probabilities?": calibration before and after the temperature, conformal coverage and
    set sizes, the 'unknown' rule (results.json's test figures; the curves of the first run's trust.json)."""
    table = trust_rows(results)
    if table is None:
        return []
    header, rows = table
    run = next((r for r in runs if (r / layout.TRUST_FILE).is_file()), None)
    blocks: list[Block] = [Heading("Can I trust its probabilities?"),
                           Table(header, rows, caption=f"calibration, conformal sets and 'unknown' ({len(results)} "
                                                       "run(s); mean ± std)", source=_source(source, root))]
    if run is None:
        return blocks
    curves = read_json(run / layout.TRUST_FILE)
    blocks.append(Text(f"The temperature was fitted on the {curves.get('fitted_on', 'validation split')}; the "
                       f"conformal sets ({curves.get('conformal_score', 'aps')} scores) are calibrated on "
                       f"{curves.get('conformal_on', 'the validation split')}. The test split fitted nothing: its "
                       "coverage is the honest check of the guarantee (≥ the level asked, on average over images).",
                       muted=True))
    by_size = (curves.get("coverage") or {}).get("0.9", {}).get("by_size", [])
    if by_size:
        blocks.append(Table(["set size", "test images", "coverage"],
                            [[str(b["size"]), str(b["images"]), pct(b["coverage"])] for b in by_size],
                            caption=f"{run.name}: coverage by set size at 90 % (a size that misses far more than "
                                    "10 % is where the guarantee holds only on average)",
                            source=_source(run / layout.TRUST_FILE, root)))
    from cnnlab.reporting.trust import reliability_png, risk_coverage_png

    title = curves.get("title", run.name)
    blocks.append(Grid([
        Figure(reliability_png(curves, title=f"{title}: reliability"), f"{run.name}: reliability diagram, before "
               "and after the temperature (drawn from trust.json)", layout.RELIABILITY_FIGURE),
        Figure(risk_coverage_png(curves, title=f"{title}: risk–coverage"), f"{run.name}: accuracy of what is "
               "accepted against the share accepted (drawn from trust.json)", layout.RISK_COVERAGE_FIGURE)]))
    return blocks


def _leak_blocks(result: dict, folder: Path, root: Path) -> list[Block]:
    """The run's own leak check (data.leak_check): test images with a near-exact copy in train/validation."""
    leaked = result.get("leaked_test_images")
    if leaked is None:
        return []
    if not leaked:
        return [Text("Leak check: no test image has a near-exact duplicate in train or validation (perceptual hash). "
                     "`cnnlab audit DATA` also looks for label issues, similar images and outliers.", muted=True)]
    listed = folder / layout.LEAKS_FILE
    return [Text(f"Leak check: {leaked} of {result['num_test']} test images have a near-exact duplicate in train or "
                 f"validation: the test accuracy is partly measured on images the model saw"
                 + (f" (the list: {_source(listed, root)})" if listed.is_file() else "")
                 + ". `cnnlab audit DATA --write-split FILE.csv` writes a split without the copies.")]


def _config_blocks(cfg, raw_yaml: str) -> list[Block]:
    optimizer = cfg.train.optimizer
    phases = "; ".join(f"{p.name}: {p.epochs} epochs, train {' + '.join(p.trainable)}"
                       + (f", lr {p.lr:g}" if p.lr else "") for p in cfg.train.phases) or "one phase, all parameters"
    augment = cfg.preprocess.augment
    brief = [
        ["model", cfg.model + "".join(f", {k}={v}" for k, v in sorted(cfg.model_args.items()))],
        ["data", f"{cfg.data.path or 'CIFAR-100 (download)'} ({cfg.data.source}), {cfg.data.num_classes} classes"
                 + (f", subset of {cfg.data.subset} training images" if cfg.data.subset else "")],
        ["preprocessing", f"normalize: {cfg.preprocess.normalize}; augmentation: rotation {augment.rotation}, "
                          f"flip {augment.hflip}, shift {augment.shift}"],
        ["training", f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, {optimizer.name} lr {optimizer.lr:g} "
                     f"(weight decay {optimizer.weight_decay:g}), schedule {cfg.train.schedule}, "
                     f"label smoothing {cfg.train.label_smoothing:g}"],
        ["phases", phases],
        ["weights kept", f"{cfg.train.keep_best} (early stopping: {cfg.train.early_stopping.monitor})"],
        ["precision / device", f"amp {cfg.train.amp}, device {cfg.device}"],
    ]
    return [Heading("Configuration"), Table(["", "value"], brief),
            Preformatted(raw_yaml, caption="the whole configuration (rerun it with --config)")]


def _environment_block(run: Path) -> list[Block]:
    if not (run / "environment.json").is_file():
        return []
    env = read_json(run / "environment.json")
    keys = ["device", "device_name", "torch_threads", "cnnlab", "torch", "torchvision", "numpy", "python",
            "platform", "started", "command"]
    return [Table(["", "value"], [[k, str(env[k])] for k in keys if k in env], caption=f"environment ({run.name})",
                  source="environment.json")]


def _timing_block(results: list[dict], names: list[str], source: str) -> Table:
    rows = [[name, f"{r['wall_time_s']:.1f}", epoch_seconds([r]),
             f"{r.get('one_off_time_s', 0.0):.1f}", str(r["epochs_trained"]), str(r["kept_epoch"]),
             ", ".join(r.get("stopped_early") or []) or "—"]
            for name, r in zip(names, results)]
    return Table(["run", "wall time (s)", "median epoch (s), by phase", "feature extraction (s)", "epochs trained",
                  "weights of epoch", "stopped early"], rows,
                 caption="timings: each phase's median epoch; feature extraction computes (or reads from the cache) "
                         "a frozen backbone's features once a run", source=source)


# ----------------------------------------------------------------------------- the four kinds

def run_blocks(run: Path, root: Path) -> tuple[str, list[Block]]:
    cfg = load_experiment(run / "config.yaml")
    result = read_results(run / layout.RESULTS_FILE)
    setup = describe_setup(cfg, [result])
    multilabel = is_multilabel([result])
    header, rows = multilabel_seeds_rows([result]) if multilabel else seeds_rows([result], None)
    blocks: list[Block] = [
        Heading("Results"), Text(setup),
        Table(header, rows, caption="test split" + (" (multi-label: F1 at the thresholds chosen on validation)"
                                                    if multilabel else ""),
              source=_source(run / layout.RESULTS_FILE, root)),
        *_leak_blocks(result, run.parent, root),
        Heading("Learning curves"), *_figure(run / "curves.png", f"{run.name}: loss and "
                                                                 f"{'mAP' if multilabel else 'accuracy'} per epoch"),
        *(_multilabel_blocks([run], root) if multilabel else _interpretation_blocks(run, root, [run], run.name)),
        *_trust_blocks([result], [run], root, run / layout.RESULTS_FILE),
        Heading("Model"), Preformatted((run / "model.txt").read_text(encoding="utf-8")),
        *_config_blocks(cfg, (run / "config.yaml").read_text(encoding="utf-8")),
        Heading("Timings and environment"), _timing_block([result], [run.name], _source(run / layout.RESULTS_FILE, root)),
        *_environment_block(run),
    ]
    return f"{cfg.experiment_name} {run.name}", blocks


def experiment_blocks(folder: Path, root: Path) -> tuple[str, list[Block]]:
    cfg = load_experiment(folder / layout.EXPERIMENT_FILE)
    summary = read_summary(folder / layout.SUMMARY_FILE)
    results, units = summary["runs"], unit_names(cfg)
    runs = [folder / u for u in units]
    setup = describe_setup(cfg, results)
    multilabel = is_multilabel(results)
    if multilabel:
        header, rows = multilabel_folds_rows(results) if cfg.data.folds else multilabel_seeds_rows(results)
        caption = (f"{cfg.data.folds}-fold cross-validation" if cfg.data.folds else
                   f"test split, {len(results)} run(s)") + " (multi-label: F1 at the thresholds chosen on validation)"
    elif cfg.data.folds:
        header, rows = folds_rows(results)
        caption = f"{cfg.data.folds}-fold cross-validation (seed {cfg.seeds[0]})"
    else:
        header, rows = seeds_rows(results, summary.get("lab"))
        caption = f"test split, {len(results)} run(s)"
    lab = summary.get("lab")
    blocks: list[Block] = [Heading("Results"), Text(setup),
                           Table(header, rows, caption=caption, source=_source(folder / layout.SUMMARY_FILE, root))]
    if lab and not cfg.data.folds:
        blocks.append(Text(f"Lab figures: {lab['note']}"
                           + ("; this experiment follows the lab's protocol on the lab's data." if lab.get("same_protocol")
                              else "; the data is the lab's, but this experiment differs from the lab's in: "
                                   + "; ".join(lab["differs"]) + " — so they are a reference, not a like-for-like "
                                   "comparison." if lab.get("differs")
                              # a summary written before cnnlab 0.12 says only that something differs
                              else "; this experiment does not follow the lab's protocol or data, so they are a "
                                   "reference, not a like-for-like comparison."), muted=True))
    if len(results) == 1:
        blocks.append(Text("One run: no spread is shown; run more seeds (--seeds 1 2 3) for a mean ± std.", muted=True))
    blocks += _leak_blocks(results[0], folder, root)
    blocks.append(Heading("Learning curves"))
    if len(results) > 1:
        blocks += _figure(folder / "curves.png", f"mean over {len(results)} runs with its min-max band")
    blocks.append(Grid([f for run in runs for f in _figure(run / "curves.png", f"{run.name}: loss and "
                                                                                 f"{'mAP' if multilabel else 'accuracy'} "
                                                                                 "per epoch")]))
    pooled = len(runs) > 1 and (folder / "confusion_matrix.csv").is_file()
    blocks += _multilabel_blocks(runs, root) if multilabel else _interpretation_blocks(
        folder if pooled else runs[0], root, runs, f"pooled over {len(runs)} runs" if pooled else runs[0].name)
    blocks += _trust_blocks(results, runs, root, folder / layout.SUMMARY_FILE)
    if (runs[0] / "model.txt").is_file():
        blocks += [Heading("Model"), Preformatted((runs[0] / "model.txt").read_text(encoding="utf-8"))]
    blocks += _config_blocks(cfg, (folder / layout.EXPERIMENT_FILE).read_text(encoding="utf-8"))
    blocks += [Heading("Timings and environment"),
               _timing_block(results, units, _source(folder / layout.SUMMARY_FILE, root)), *_environment_block(runs[0])]
    return f"{cfg.experiment_name}: {setup}", blocks


def ablation_blocks(folder: Path, root: Path) -> tuple[str, list[Block]]:
    from cnnlab.reporting.charts import ablation_chart

    ablation = read_json(folder / "ablation.json")
    same = ablation.get("lab_same_protocol", False)
    steps = ablation["steps"]
    header, rows = ablation_rows(steps, ablation["alpha"], lab_same_protocol=same)
    n = len(steps[0]["test_acc"])
    setup = experiment_setup(step_dir(folder, 0, steps[0]["name"]))
    lab = "lab" if same else "lab (own protocol: Keras, 50 epochs, all data)"
    blocks: list[Block] = [
        Heading("The steps"), Text(f"{len(steps)} cumulative steps, {n} run(s) each; first step: {setup}."),
        Table(header, rows, caption="test accuracy per step and the gain over the previous step",
              source=_source(folder / "ablation.json", root)),
        Text(f"'Beyond noise?' asks whether a step's gain exceeds seed-to-seed noise: Welch's t-test "
             f"p < {ablation['alpha']} and the bootstrap interval of the gain excludes 0."
             + (" With fewer than 3 runs per step no verdict is given: two runs cannot estimate the spread."
                if n < 3 else ""), muted=True),
        Figure(ablation_chart(steps, title=f"{ablation['name']}: test accuracy per step ({n} run(s) each)\n{setup}",
                              lab_label=lab), "each step's test accuracy: mean ± std, every run a dot", "steps.png"),
        Heading("Validation curves"),
        *_figure(folder / "val_curves.png", "validation accuracy per step: mean over runs, min-max band"),
        Heading("What each step changes"),
        Table(["step", "change", "keys set"], _step_changes(folder)),
    ]
    return f"ablation {ablation['name']}: {setup}", blocks


def _step_changes(folder: Path) -> list[list[str]]:
    record = parse_yaml((folder / "ablation.yaml").read_text(encoding="utf-8"), str(folder / "ablation.yaml"))
    return [[f"{i} {s['name']}", s.get("label", ""), ", ".join(f"{k}={v}" for k, v in (s.get("set") or {}).items())
             or "—"] for i, s in enumerate(record["steps"])]


def compare_blocks(folder: Path, root: Path) -> tuple[str, list[Block]]:
    from cnnlab.reporting.charts import compare_chart

    comparison = read_json(folder / "compare.json")
    rows = comparison["rows"]
    header, body = compare_rows(rows)
    networks = [r for r in rows if r.get("folder")]
    setups, labelled, data = [], [], ""
    for r in rows:
        experiment = Path(r["folder"]) if r.get("folder") else None
        if experiment is None or not (experiment / layout.SUMMARY_FILE).is_file():
            labelled.append(r)
            continue
        cfg, runs = load_experiment(experiment / layout.EXPERIMENT_FILE), read_summary(experiment / layout.SUMMARY_FILE)["runs"]
        setups.append(f"{r['name']}: {describe_setup(cfg, runs)}")
        data = data or f"{Path(cfg.data.path).name if cfg.data.path else 'CIFAR-100'} ({cfg.data.num_classes} classes)"
        what = ", ".join(filter(None, [model_spec(cfg).backbone, f"{runs[0]['epochs']} ep"]))
        labelled.append({**r, "name": f"{r['name']} ({what})"})  # the chart names backbone and epochs
    runs = max(len(r["test_acc"]) for r in rows)
    figure = headline_figure(rows)  # test accuracy, or a multi-label comparison's test mAP
    blocks: list[Block] = [
        Heading("The comparison"), *[Text(s) for s in setups],
        Table(header, body, caption=f"{figure} of each variant", source=_source(folder / "compare.json", root)),
        Figure(compare_chart(labelled, title=f"{figure} on {data or 'the same data'} ({runs} run(s) each)"),
               f"each variant's {figure}: mean ± std, every run a dot", "compare.png"),
    ]
    if any(r.get("lab") and not r["lab"].get("same_protocol") for r in rows):
        blocks.append(Text("The lab's figures are rows of their own: the lab used another protocol or data "
                           "(e.g. ResNet50 on 200 classes), so they are a reference, not a like-for-like comparison.",
                           muted=True))
    # an experiment of several runs has mean curves of its own; one run's are in its only run folder (any seed)
    curves = [f for r in networks for f in _figure(Path(r["folder"]) / layout.CURVES_FILE, f"{r['name']}: mean curves")
              or [g for unit in layout.unit_folders(Path(r["folder"]))[:1]
                  for g in _figure(unit / layout.CURVES_FILE, f"{r['name']}: learning curves ({unit.name})")]]
    if curves:
        blocks += [Heading("Learning curves"), Grid(curves)]
    return f"comparison: {', '.join(comparison['experiments'])}", blocks


def tune_blocks(folder: Path, root: Path) -> tuple[str, list[Block]]:
    """A tuning study: tuned against untuned on test (only now), the best trials, Optuna's figures."""
    final = read_json(folder / layout.STUDY_RESULTS)
    rows = [[name, str(len(final[name]["test_acc"])), pm(final[name]["test_acc"], percent=True),
             pm(final[name]["test_loss"], percent=False)] for name in ("preset", "tuned")]
    p = "—" if final["p_value"] is None else f"{final['p_value']:.3f}"
    params = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                       for k, v in final["best_params"].items())
    trials = _csv_rows(folder / "trials.csv") if (folder / "trials.csv").is_file() else []
    done = [t for t in trials if t["state"] == "complete" and t["value"] not in ("", None)]
    maximize = final["monitor"] != "val_loss"
    done.sort(key=lambda t: float(t["value"]), reverse=maximize)
    keys = [k for k in (trials[0] if trials else {}) if k not in ("number", "state", "value", "last_step")]
    blocks: list[Block] = [
        Heading("Tuned against untuned, on the test split (used only now)"),
        Text(f"best trial {final['best_trial']} on validation ({final['monitor']} {final['best_value']:.4f}): {params}"),
        Table(["", "runs", "test accuracy", "test loss"], rows, caption="the same final seeds "
              f"{final['seeds']}", source=_source(folder / layout.STUDY_RESULTS, root)),
        Text(f"gain {100 * final['gain']:+.2f} points, Welch p = {p}, 95 % bootstrap interval "
             f"[{100 * final['ci_low']:+.2f}, {100 * final['ci_high']:+.2f}]: {final['verdict']}"),
        Heading("The trials (validation only)"),
        Text(f"{len(trials)} trials: {sum(t['state'] == 'complete' for t in trials)} complete, "
             f"{sum(t['state'] == 'pruned' for t in trials)} pruned, {sum(t['state'] == 'fail' for t in trials)} failed"),
        Table(["trial", final["monitor"], *keys], [[t["number"], f"{float(t['value']):.4f}", *[t[k] for k in keys]]
                                                   for t in done[:10]],
              caption="the ten best complete trials", source=_source(folder / "trials.csv", root)),
    ]
    figures = [f for name, caption in (("optimization_history.png", "optimization history"),
                                       ("intermediate_values.png", "validation per epoch, pruned trials included"),
                                       ("param_importances.png", "parameter importances"),
                                       ("slice.png", "each parameter against the validation figure"))
               for f in _figure(folder / name, caption)]
    if figures:
        blocks.append(Grid(figures))
    return f"tuning study: {folder.name}", blocks


def probe_blocks(folder: Path, root: Path) -> tuple[str, list[Block]]:
    """A backbone probe, as the probe decides: validation first (the choice is made on it alone), the
    recommendation and its rule, ImageNet top-1, parameters and multiply-adds; test accuracy a column, never charted."""
    from cnnlab.studies.probe import probe_rows, recommendation_text

    probe = read_json(folder / layout.PROBE_RESULTS)
    rows = probe["rows"]
    header, body = probe_rows(rows)
    chosen = next((r for r in rows if r["name"] == probe.get("recommended")), None)
    charted = [{**r, "test_acc": r["val_acc"], "lab": None} for r in rows if r.get("val_acc")]
    blocks: list[Block] = [
        Heading("The probe"), Text(recommendation_text(chosen, rows[0].get("num_val", 0), rows) + "."),
        Table(header, body, caption="a linear probe on each backbone's frozen features (test accuracy shown, "
                                    "not used to choose)", source=_source(folder / layout.PROBE_RESULTS, root)),
        Text(f"Rule: {probe.get('rule', 'best mean validation accuracy')}.", muted=True)]
    if charted:
        from cnnlab.reporting.charts import compare_chart

        blocks.append(Figure(compare_chart(charted, title="validation accuracy of each backbone (what the choice "
                                                          "is made on)"), "validation accuracy: mean ± std, every run a "
                                                                          "dot", "probe.png"))
    return f"backbone probe: {', '.join(probe['backbones'])}", blocks


def audit_blocks(folder: Path, root: Path) -> tuple[str, list[Block]]:
    """A data audit (`cnnlab audit`): what it found, each kind's list and thumbnails, and how it looked."""
    audit = read_json(folder / layout.AUDIT_RESULTS)
    c, t = audit["counts"], audit["thresholds"]
    source = _source(folder / layout.AUDIT_RESULTS, root)
    blocks: list[Block] = [
        Heading("What the audit found"),
        Text(f"{audit['data']} ({audit['description']}): {c['images']} images, {audit['classes']} classes "
             f"(train {audit['split']['train']}, validation {audit['split']['val']}, test {audit['split']['test']}); "
             f"features of {audit['backbone']}."),
        Table(["finding", "count", "list"],
              [["label issues (confident learning on out-of-fold probabilities)", str(c["label_issues"]),
                "label_issues.csv"],
               ["duplicate pairs", str(c["duplicate_pairs"]), "duplicates.csv"],
               ["… of them across splits (leaks)", str(c["leaked_pairs"]), "duplicates.csv"],
               ["test images with a copy in train or validation", str(c["leaked_test_images"]), "duplicates.csv"],
               ["outliers", str(c["outliers"]), "outliers.csv"]], caption="the findings", source=source)]
    written = audit.get("written_split")
    if written:
        blocks.append(Text(f"Split written to {written['path']}: {written['kept']} images kept, {written['dropped']} "
                           f"dropped ({', '.join(f'{n} {r}' for r, n in written['dropped_by_reason'].items() if n)}), "
                           f"{written['relabelled']} relabelled; the test split is unchanged."))
    sections = (("Label issues", "label_issues", ["rank", "image", "split", "given_label", "suggested_label",
                                                  "self_confidence"]),
                ("Duplicates and leaks", "duplicates", ["kinds", "leak", "image_a", "split_a", "image_b", "split_b",
                                                        "hash_distance", "cosine"]),
                ("Outliers", "outliers", ["image", "split", "label", "kind", "value"]))
    for title, name, columns in sections:
        rows = _csv_rows(folder / f"{name}.csv") if (folder / f"{name}.csv").is_file() else []
        blocks.append(Heading(title))
        if not rows:
            blocks.append(Text("None found.", muted=True))
            continue
        blocks += _figure(folder / f"{name}.png", f"the first of {len(rows)} ({name}.csv lists them all)")
        blocks.append(Table(columns, [[r[k] for k in columns] for r in rows[:30]],
                            caption=f"the first {min(30, len(rows))} of {len(rows)}",
                            source=_source(folder / f"{name}.csv", root), tall=len(rows) > 15))
    heads = [[name, pct(audit["out_of_fold_accuracy"][name]), f"{audit['out_of_fold_log_loss'][name]:.4f}",
              "chosen" if name == audit["head"] else ""] for name in audit["out_of_fold_accuracy"]]
    timing = audit["timing"]
    blocks += [Heading("How it looked"),
               Table(["head", "out-of-fold accuracy", "out-of-fold log loss", ""], heads,
                     caption=f"{audit['folds']} stratified folds (seed {audit['seed']}); the lower log loss gives the "
                             "probabilities confident learning reads", source=source),
               Text(f"Duplicates: perceptual hashes within {t['hash_distance']} of {t['hash_bits']} bits (near; "
                    f"{t.get('mirrored_hash_distance', t['hash_distance'])} against a mirror image), identical bytes "
                    f"or pixels (exact), feature cosine ≥ {t['similar_cosine']} (similar). "
                    f"Outliers: mean cosine distance to the {t['k_neighbours']} nearest images above "
                    f"{t['far_fence']:.3f} (Q3 + 3 IQR; median {t['median_knn_distance']:.3f}), pixel std below "
                    f"{t['blank_std']}, shorter side below {t['tiny_side']} px, aspect above {t['max_aspect']}. "
                    f"Time: {timing['total_s']:.1f} s (features {timing['features_s']:.1f} s, "
                    f"{timing['feature_cache']} cache).", muted=True)]
    return f"data audit of {audit['data']}", blocks


BUILDERS: dict[str, Callable[[Path, Path], tuple[str, list[Block]]]] = {
    "run": run_blocks, "experiment": experiment_blocks, "ablation": ablation_blocks, "compare": compare_blocks,
    "tune": tune_blocks, "probe": probe_blocks, "audit": audit_blocks}


def _headline(kind: str, path: Path) -> list[str]:
    """One line of the side-by-side overview: the figure a reader compares first."""
    if kind == "experiment":
        s = read_summary(path / layout.SUMMARY_FILE)
        if is_multilabel(s["runs"]):
            return [path.name, f"{kind} (multi-label: mAP)", pm([r["test_map"] for r in s["runs"]], percent=True),
                    pm([r["test_loss"] for r in s["runs"]], percent=False), str(len(s["runs"]))]
        return [path.name, kind, pm([r["test_acc"] for r in s["runs"]], percent=True),
                pm([r["test_loss"] for r in s["runs"]], percent=False), str(len(s["runs"]))]
    if kind == "run":
        r = read_results(path / layout.RESULTS_FILE)
        if is_multilabel([r]):
            return [path.name, f"{kind} (multi-label: mAP)", pct(r["test_map"]), f"{r['test_loss']:.4f}", "1"]
        return [path.name, kind, pct(r["test_acc"]), f"{r['test_loss']:.4f}", "1"]
    if kind == "ablation":
        last = read_json(path / "ablation.json")["steps"][-1]
        return [path.name, f"ablation (last step: {last['name']})", pm(last["test_acc"], percent=True),
                pm(last["test_loss"], percent=False), str(len(last["test_acc"]))]
    if kind == "tune":
        final = read_json(path / layout.STUDY_RESULTS)
        return [path.name, "tuning study (tuned)", pm(final["tuned"]["test_acc"], percent=True),
                pm(final["tuned"]["test_loss"], percent=False), str(len(final["tuned"]["test_acc"]))]
    if kind == "probe":
        probe = read_json(path / layout.PROBE_RESULTS)
        chosen = next((r for r in probe["rows"] if r["name"] == probe.get("recommended")), probe["rows"][0])
        return [path.name, f"backbone probe (recommended on validation: {chosen['name']})",
                pm(chosen["test_acc"], percent=True), "—", str(len(chosen["test_acc"]))]
    if kind == "audit":
        counts = read_json(path / layout.AUDIT_RESULTS)["counts"]
        return [path.name, f"data audit: {counts['label_issues']} label issue(s), {counts['leaked_test_images']} "
                           f"leaked test image(s), {counts['outliers']} outlier(s)", "—", "—", "—"]
    rows = read_json(path / "compare.json")["rows"]
    best = max(rows, key=lambda r: sum(r["test_acc"]) / len(r["test_acc"]))
    return [path.name, f"comparison (best: {best['name']})", pm(best["test_acc"], percent=True),
            pm(best["test_loss"], percent=False) if best["test_loss"] else "—", str(len(best["test_acc"]))]


def build_report(paths: list[Path]) -> Document:
    kinds = [folder_kind(p) for p in paths]
    stamp = time.strftime("%Y-%m-%d %H:%M")
    if len(paths) == 1:
        title, blocks = BUILDERS[kinds[0]](paths[0], paths[0])
        return Document(title, f"{paths[0]} · written {stamp} by {GENERATOR}", blocks)
    sections = []
    for kind, path in zip(kinds, paths):
        title, blocks = BUILDERS[kind](path, path)
        sections.append(Section(title, blocks, subtitle=str(path)))
    overview = Table(["folder", "kind", "test accuracy", "test loss", "runs"],
                     [_headline(k, p) for k, p in zip(kinds, paths)], caption="side by side")
    return Document(f"{len(paths)} results side by side", f"written {stamp} by {GENERATOR}",
                    [overview, SideBySide(sections)])


# ----------------------------------------------------------------------------- writing

def _refuse_foreign(out: Path) -> None:
    """Overwrite only a report cnnlab wrote: never a file the user made."""
    if out.exists():
        head = out.read_bytes()[:4096].decode("utf-8", "replace") if out.is_file() else ""
        if REPORT_MARKER not in head:
            raise RunError(f"{out}: exists and is not a report cnnlab wrote; choose another --out")


def write_report(paths: list[Path | str], out: Path | str | None = None, fmt: str | None = None) -> Path:
    """Write the report of `paths` to `out` (default: report.html in the one folder, or here for several)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("report: give at least one run, experiment, ablation or comparison folder")
    if fmt is None:
        fmt = "md" if out is not None and Path(out).suffix.lower() == ".md" else "html"
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got '{fmt}'")
    if out is None:
        out = (paths[0] if len(paths) == 1 else Path(".")) / f"report.{fmt}"
    out = Path(out)
    document = build_report(paths)  # reads everything before anything is written
    _refuse_foreign(out)
    footer = f"{GENERATOR} · " + " · ".join(str(p) for p in paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        atomic_write_text(out, render_html(document, footer=footer))
    else:
        atomic_write_text(out, f"<!-- {REPORT_MARKER}: {GENERATOR} -->\n" + render_markdown(document, out, footer=footer))
    return out


def write_report_quietly(path: Path, log: Callable[[str], None] = print) -> Path | None:
    """The report at the end of run / ablation / compare: a failure to draw it never fails the study."""
    try:
        out = write_report([path])
    except Exception as exc:  # noqa: BLE001 — the results are safe on disk; say so and go on
        log(f"report: not written ({type(exc).__name__}: {exc}); `cnnlab report {path}` retries")
        return None
    log(f"report: {out}")
    return out

