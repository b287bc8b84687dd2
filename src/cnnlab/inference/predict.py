"""`cnnlab predict`: class probabilities for image files and folders, as a table and a CSV.

The CSV's columns are a contract scripts can rely on: `path, pred_1, prob_1, ..., pred_k, prob_k`, then
`set` with --coverage (the conformal set's classes, `;`-separated, most likely first) and `decision` with
--reject-rate (the top class, or `unknown`). Probabilities are calibrated by the run's temperature (trust/).
A multi-label model's CSV adds `labels` (the classes at or above their thresholds, `;`-separated, most
likely first; empty: none), its probabilities each class's sigmoid; `--all-classes` adds `p_<class>` for
every class.
Images are decoded and resized by worker processes exactly as training streamed them
(`data/streaming.py`), so a file predicts as its twin in the training data evaluated.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cnnlab.data.imagefolder import IMAGE_SUFFIXES
from cnnlab.data.streaming import DecodeImages, collate_decoded, default_workers, worker_context
from cnnlab.errors import DataError, RunError
from cnnlab.fileio import atomic_write_text
from cnnlab.inference.trained import TrainedModel

Log = Callable[[str], None]


@dataclass
class Prediction:
    path: Path
    probabilities: torch.Tensor  # (num_classes,)
    label: str | None  # the class folder it came from, if any
    logits: torch.Tensor | None = None  # one model's raw logits (the 'unknown' rule's energy reads them)


def collect_images(inputs: list[Path]) -> list[tuple[Path, str | None]]:
    """Image files named or found under folders; a file inside a subfolder of a named folder is
    labelled with that subfolder's name (a folder of class folders)."""
    found: list[tuple[Path, str | None]] = []
    for item in map(Path, inputs):
        if item.is_file():
            found.append((item, None))
        elif item.is_dir():
            for path in sorted(item.rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    relative = path.relative_to(item)
                    found.append((path, relative.parts[0] if len(relative.parts) > 1 else None))
        else:
            raise DataError(f"{item}: no such image file or folder")
    if not found:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, inputs))}")
    return found


def predict(models: list[TrainedModel], inputs: list[Path], *, batch_size: int = 64, workers: int | None = None,
            strict: bool = False, progress: bool = True, log: Log = print) -> tuple[list[Prediction], list[str]]:
    """Probabilities for every readable image (averaged over `models` for an ensemble); the unreadable named."""
    first = models[0]
    for other in models[1:]:
        if other.class_names != first.class_names or other.input_size != first.input_size:
            raise RunError(f"{other.source}: its classes or input size differ from {first.source}; "
                           "an ensemble needs runs of one experiment")
    items = collect_images(inputs)
    decode = DecodeImages([p for p, _ in items], first.input_size[1], first.record.get("resize", "stretch"),
                          first.record.get("crop_ratio", 0.875), first.record.get("interpolation", "bilinear"))
    batches = [list(range(s, min(s + batch_size, len(items)))) for s in range(0, len(items), batch_size)]
    workers = default_workers() if workers is None else workers
    loader = DataLoader(decode, batch_sampler=batches, collate_fn=collate_decoded, num_workers=workers,
                        multiprocessing_context=worker_context() if workers else None)
    predictions, errors = [], []
    # disable=None: no bar when stderr is not a terminal (a log file), so no leftovers beside the table
    bar = tqdm(total=len(items), desc="predict", unit="img", disable=None if progress else True, leave=False)
    for images, index, bad in loader:
        for _, message in bad:
            if strict:
                raise DataError(f"{message} (without --strict, unreadable files are skipped and counted)")
            errors.append(message)
        if images is not None:
            if len(models) == 1:
                logits = first.batch_logits(images).cpu()
                probs = first.logits_to_probabilities(logits)
            else:
                logits, probs = None, torch.stack([m.batch_probabilities(images) for m in models]).mean(0).cpu()
            predictions += [Prediction(items[i][0], p, items[i][1], None if logits is None else logits[j])
                            for j, (i, p) in enumerate(zip(index, probs))]
        bar.update(len(index) + len(bad))
    bar.close()
    return predictions, errors


def top_k(prediction: Prediction, class_names: list[str], k: int) -> list[tuple[str, float]]:
    probs, index = prediction.probabilities.topk(min(k, len(class_names)))
    return [(class_names[i], float(p)) for p, i in zip(probs.tolist(), index.tolist())]


@dataclass
class TrustAnswers:
    """What --coverage and --reject-rate add to each prediction: its conformal set and its decision."""

    sets: list[list[str]] | None = None
    decisions: list[str] | None = None
    labels: list[list[str]] | None = None  # a multi-label model's: the classes above their thresholds


UNKNOWN = "unknown"


def trust_answers(model: TrainedModel, predictions: list[Prediction], *, coverage: float | None,
                  reject_rate: float | None) -> TrustAnswers:
    """Each image's conformal set at `coverage` and its top class or `unknown` under the rule that refuses
    `reject_rate` of the validation images (the run's trust record; trust/fitted.py)."""
    answers = TrustAnswers()
    if model.multilabel and predictions:
        answers.labels = model.labels_of(torch.stack([p.probabilities for p in predictions]))
    if coverage is None and reject_rate is None or not predictions:
        return answers
    names = model.class_names
    if coverage is not None:
        trust = model.require_trust("--coverage")
        probs = torch.stack([p.probabilities for p in predictions])
        answers.sets = [[names[i] for i in s] for s in trust.sets(probs, coverage)]
    if reject_rate is not None:
        trust = model.require_trust("--reject-rate")
        accepted = trust.accepted(torch.stack([p.logits for p in predictions]), reject_rate)
        answers.decisions = [names[int(p.probabilities.argmax())] if ok else UNKNOWN
                             for p, ok in zip(predictions, accepted)]
    return answers


def predictions_csv(predictions: list[Prediction], class_names: list[str], k: int,
                    answers: TrustAnswers | None = None, *, all_classes: bool = False) -> str:
    k = min(k, len(class_names))
    answers = answers or TrustAnswers()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", *[f"{name}_{i}" for i in range(1, k + 1) for name in ("pred", "prob")],
                     *(["labels"] if answers.labels is not None else []),
                     *(["set"] if answers.sets is not None else []),
                     *(["decision"] if answers.decisions is not None else []),
                     *([f"p_{name}" for name in class_names] if all_classes else [])])
    for index, p in enumerate(predictions):
        writer.writerow([str(p.path), *[v for name, prob in top_k(p, class_names, k) for v in (name, f"{prob:.6f}")],
                         *([";".join(answers.labels[index])] if answers.labels is not None else []),
                         *([";".join(answers.sets[index])] if answers.sets is not None else []),
                         *([answers.decisions[index]] if answers.decisions is not None else []),
                         *([f"{float(v):.6f}" for v in p.probabilities] if all_classes else [])])
    return buffer.getvalue()


def accuracy(predictions: list[Prediction], class_names: list[str]) -> tuple[float, int] | None:
    """Top-1 accuracy when every image came from a class folder named like one of the classes."""
    labelled = [p for p in predictions if p.label is not None]
    if not labelled or len(labelled) != len(predictions) or any(p.label not in class_names for p in labelled):
        return None
    right = sum(class_names[int(p.probabilities.argmax())] == p.label for p in labelled)
    return right / len(labelled), len(labelled)


def free_output_path(path: Path | None) -> Path:
    """--out as given (never overwriting a file), else predictions.csv, predictions-1.csv, ..."""
    if path is not None:
        if path.exists():
            raise RunError(f"{path}: already exists; cnnlab does not overwrite files: choose another --out")
        return path
    candidate, n = Path("predictions.csv"), 0
    while candidate.exists():
        n += 1
        candidate = Path(f"predictions-{n}.csv")
    return candidate


def write_predictions(path: Path, predictions: list[Prediction], class_names: list[str], k: int,
                      answers: TrustAnswers | None = None, *, all_classes: bool = False) -> None:
    atomic_write_text(path, predictions_csv(predictions, class_names, k, answers, all_classes=all_classes))
