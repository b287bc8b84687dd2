"""`cnnlab interpret RUN_DIR [--gradcam N]`: the interpretation files of an existing run, again or anew.

For a seed folder (or each seed of an experiment folder, then pooled): the test split is read
from the run's recorded configuration, the saved model predicts it, and the confusion matrix,
per-class table, most-confused pairs and top losses are written; `--gradcam N` adds
`gradcam.png`, N test images with their Grad-CAM maps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

import cnnlab.layout as layout
from cnnlab.inference.gradcam import gradcam
from cnnlab.inference.trained import load_trained, run_data, trained_runs
from cnnlab.reporting.interpretation import plot_gradcam, pool_interpretation
from cnnlab.training.loop import predict_logits
from cnnlab.training.run_folder import write_interpretation

Log = Callable[[str], None]


def interpret_run(run_dir: Path, *, gradcam_images: int = 0, layer: str | None = None, batch_size: int = 256,
                  log: Log = print) -> None:
    trained = load_trained(run_dir)
    folder = trained.source.parent
    splits = run_data(trained)
    # as the run tested: with its TTA views, so the accuracy is the run's test accuracy
    logits, labels = predict_logits(trained.model, splits.test, preprocess=lambda x, train: trained.preprocess(x),
                                    batch_size=batch_size, tta=trained.tta)
    title = f"{trained.record.get('experiment', trained.record['model'])} — {folder.name}"
    write_interpretation(folder, logits, labels, splits.test, trained.class_names, title=title)
    accuracy = float((logits.argmax(1) == labels).float().mean())
    log(f"{folder}: test accuracy {100 * accuracy:.2f} % on {len(labels)} images; "
        "confusion_matrix.csv/.png, per_class.csv, most_confused.csv, top_losses.png written")
    if gradcam_images:
        chosen = spread_over_classes(labels, logits.argmax(1), gradcam_images)
        images, truth = next(iter(splits.test.subset(torch.as_tensor(chosen)).batches(len(chosen))))
        maps, explained = gradcam(trained, images, layer=layer)
        names = trained.class_names
        plot_gradcam(folder / "gradcam.png", images.permute(0, 2, 3, 1).cpu().numpy(), maps.numpy(),
                     [names[int(t)] for t in truth], [names[int(e)] for e in explained],
                     title=f"{title}: Grad-CAM of the predicted class")
        log(f"{folder / 'gradcam.png'}: {len(images)} test images")


def spread_over_classes(labels: torch.Tensor, predicted: torch.Tensor, count: int) -> list[int]:
    """`count` test images to explain, spread over the classes and over right and wrong predictions: round robin
    over the classes (in order), each class giving first a wrong prediction, then a right one, alternately; in
    the test split's order within each kind, so the choice repeats. (The first N images of a split sorted by
    class would all be one class, every prediction right.)"""
    pools: dict[int, list[list[int]]] = {}
    for index, (label, guess) in enumerate(zip(labels.tolist(), predicted.tolist())):
        pools.setdefault(label, [[], []])[int(label == guess)].append(index)  # [wrong, right]
    order = [pools[c] for c in sorted(pools)]
    chosen, turn = [], 0
    while len(chosen) < min(count, len(labels)):
        progressed = False
        for wrong_right in order:
            if len(chosen) >= count:
                break
            first, second = (wrong_right[0], wrong_right[1]) if turn % 2 == 0 else (wrong_right[1], wrong_right[0])
            pool = first or second
            if pool:
                chosen.append(pool.pop(0))
                progressed = True
        turn += 1
        if not progressed:
            break
    return chosen


def interpret(path: Path, *, gradcam_images: int = 0, layer: str | None = None, log: Log = print) -> None:
    """A seed folder, or every finished run of an experiment folder (then pooled into it)."""
    runs = [weights.parent for weights in trained_runs(Path(path))]
    for run in runs:
        interpret_run(run, gradcam_images=gradcam_images, layer=layer, log=log)
    if (Path(path) / layout.EXPERIMENT_FILE).is_file():
        pool_interpretation(Path(path), runs, title=f"{Path(path).name}: test confusion pooled over {len(runs)} "
                                                    "run(s) (row-normalised)")
