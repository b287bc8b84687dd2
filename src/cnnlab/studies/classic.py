"""Classic classifiers on cached backbone features (scikit-learn), as the lab report suggests."""
from __future__ import annotations

import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from cnnlab.config import ExperimentConfig
from cnnlab.errors import ConfigError
from cnnlab.reporting.interpretation import confusion
from cnnlab.training.features import cached_features
from cnnlab.training.learner import build_model, fit_preprocess
from cnnlab.training.runtime import Runtime
from cnnlab.training.scores import scores

CLASSIC_HEADS = {
    "logreg": ("logistic regression (L2, C=1)", lambda seed: LogisticRegression(max_iter=3000, C=1.0)),
    "linear_svm": ("linear SVM (C=0.01)", lambda seed: LinearSVC(C=0.01, max_iter=20000, random_state=seed)),
    "knn": ("k-NN (k=10, cosine, distance-weighted)",
            lambda seed: KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS, metric="cosine", weights="distance")),
}
KNN_NEIGHBOURS = 10


def run_classic_heads(cfg: ExperimentConfig, splits, heads: list[str], *, log=print) -> list[dict]:
    """Fit each head on the training split's features of `cfg`'s model; report held-out and test accuracy."""
    unknown = [h for h in heads if h not in CLASSIC_HEADS]
    if unknown:
        raise ConfigError(f"unknown classic head(s) {', '.join(unknown)}; valid: {', '.join(CLASSIC_HEADS)}")
    runtime = Runtime.resolve(cfg)
    device = runtime.device
    runtime.seed(cfg.seeds[0])
    model = build_model(cfg, splits.num_classes, splits.input_size).to(device)
    if not model.flat_features:
        raise ConfigError(f"classic heads need pooled features; model '{cfg.model}' of experiment "
                          f"'{cfg.experiment_name}' does not pool them (model_args.pool: none)")
    preprocess = fit_preprocess(cfg, splits)
    data = {}
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        if split is not None:
            features, _ = cached_features(model, split.to(device), preprocess, cache_dir=cfg.train.feature_cache_dir,
                                          batch_size=cfg.train.eval_batch_size, device=device, amp=runtime.precision,
                                          log=log, engine=runtime.engine)
            data[name] = (features.images.float().numpy(), features.labels.numpy())
    results = []
    for head in heads:
        label, make = CLASSIC_HEADS[head]
        for seed in cfg.seeds:
            tick = time.perf_counter()
            estimator = make(seed)
            if head == "knn":  # a training split smaller than k: every training image is a neighbour
                estimator.set_params(n_neighbors=min(KNN_NEIGHBOURS, len(data["train"][1])))
            if len(np.unique(data["train"][1])) < 2:
                raise ConfigError(f"classic head {head}: the training split holds one class only")
            classifier = make_pipeline(StandardScaler(), estimator).fit(*data["train"])
            fit_s = time.perf_counter() - tick
            row = {"head": head, "label": label, "seed": seed, "fit_time_s": fit_s,
                   **_scored("test", classifier, data["test"], splits.num_classes)}
            if "val" in data:
                row |= _scored("val", classifier, data["val"], splits.num_classes)
            results.append(row)
            log(f"{label}, seed {seed}: test accuracy {100 * row['test_acc']:.2f}% (fit {fit_s:.1f}s)")
    return results


def _scored(split: str, classifier, data: tuple[np.ndarray, np.ndarray], num_classes: int) -> dict[str, float]:
    """{split}_acc, {split}_bal_acc and {split}_macro_f1 of a fitted classifier on (features, labels)."""
    features, labels = data
    figures = scores(confusion(labels, classifier.predict(features), num_classes))
    return {f"{split}_{name}": value for name, value in figures.items()}
