"""`cnnlab compare`: several experiments (and classic heads) over the same seeds, one table."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cnnlab.config import load_experiment
from cnnlab.fileio import atomic_write_json, atomic_write_text, create_unique_dir
from cnnlab.models import get_model_entry
from cnnlab.reference import lab_reference
from cnnlab.reporting.tables import mean_std, pct, pm, render_table
from cnnlab.training.classic import run_classic_heads
from cnnlab.training.experiment import data_key, describe_splits, load_data, new_group, run_in_group

Log = Callable[[str], None]


def run_compare(experiments: list[str], *, overrides: dict[str, Any], classic: list[str], out: str | None = None,
                progress: bool = True, log: Log = print) -> Path:
    configs = [load_experiment(name, overrides=overrides) for name in experiments]
    for cfg in configs:
        get_model_entry(cfg.model)
    group = create_unique_dir(Path(out or configs[0].out) / "compare")
    log(f"comparison folder: {group}")
    rows, cache = [], {}
    for cfg in configs:
        key = data_key(cfg)
        if key not in cache:
            cache[key] = load_data(cfg, log)
            log(describe_splits(cache[key]))
        log(f"\n=== {cfg.experiment_name} ({cfg.model}) ===")
        folder = new_group(cfg, parent=group / cfg.experiment_name)
        summary = run_in_group(cfg, folder, cache[key], progress=progress, log=log)
        runs = summary["runs"]
        rows.append({"name": cfg.experiment_name, "kind": "network", "test_acc": [r["test_acc"] for r in runs],
                     "test_loss": [r["test_loss"] for r in runs], "wall_time_s": [r["wall_time_s"] for r in runs],
                     "lab": lab_reference(cfg.experiment_name), "folder": str(folder)})
    if classic:
        cfg = configs[0]
        log(f"\n=== classic heads on {cfg.model_args.get('backbone', '')} features ===")
        # The classic heads read pooled features of the same backbone, weights and data; keys that
        # shape another experiment's head or policy do not apply to them.
        shared = {k: v for k, v in overrides.items() if not k.startswith(("train.phases", "model_args.head"))}
        results = run_classic_heads(load_experiment("birdnet_v0", overrides={**shared, "seeds": cfg.seeds}),
                                    cache[data_key(cfg)], classic, log=log)
        for head in classic:
            mine = [r for r in results if r["head"] == head]
            rows.append({"name": f"classic: {mine[0]['label']}", "kind": "classic",
                         "test_acc": [r["test_acc"] for r in mine], "test_loss": None,
                         "wall_time_s": [r["fit_time_s"] for r in mine], "lab": None})
    atomic_write_json(group / "compare.json", {"experiments": experiments, "overrides": overrides, "rows": rows})
    table = compare_table(rows)
    atomic_write_text(group / "compare.md", f"# Comparison\n\n{compare_table(rows, markdown=True)}\n")
    log(f"\n{table}\n\nresults: {group}")
    return group


def compare_table(rows: list[dict], *, markdown: bool = False) -> str:
    header = ["variant", "runs", "test accuracy", "test loss", "wall time / run (s)", "lab accuracy", "lab loss"]
    body = []
    for r in rows:
        lab = r["lab"]
        body.append([r["name"], str(len(r["test_acc"])), pm(r["test_acc"], percent=True),
                     pm(r["test_loss"], percent=False) if r["test_loss"] else "—",
                     f"{mean_std(r['wall_time_s'])[0]:.1f}", pct(lab["mean_test_acc"]) if lab else "—",
                     f"{lab['mean_test_loss']:.4f}" if lab else "—"])
    return render_table(header, body, markdown=markdown)
