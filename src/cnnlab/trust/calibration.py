"""How far a model's probabilities can be taken at their word, and one temperature that makes them better.

A classifier is *calibrated* when, of the images it gives 80 %, 80 % are right. Fine-tuned networks are
typically over-confident (Guo et al. 2017); dividing the logits by one temperature T > 1 fitted on held-out
data (never the test split) fixes most of it without changing a single prediction (argmax is unchanged).
"""
from __future__ import annotations

import numpy as np
import torch

ECE_BINS = 15  # Guo et al.'s equal-width bins


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (the cross-entropy), probabilities floored at 1e-12."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: the mean over images of Σ_k (p_k − 1[k = y])², from 0 (perfect) to 2."""
    labels = np.asarray(labels, dtype=np.int64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def _binned_gap(confidence: np.ndarray, correct: np.ndarray, bin_of: np.ndarray, bins: int) -> float:
    total = 0.0
    for b in range(bins):
        inside = bin_of == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |accuracy − confidence| of the top class in `bins` equal-width bins of
    confidence over (0, 1], weighted by each bin's share of the images."""
    confidence, correct = _top(probs, labels)
    # bin b holds confidences in (b/bins, (b+1)/bins]: the convention of Guo et al. and of torchmetrics
    bin_of = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return _binned_gap(confidence, correct, bin_of, bins)


def adaptive_ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over `bins` equal-mass bins (each holds the same number of images, by confidence rank; Nixon et
    al. 2019): not dominated by the one crowded bin near 100 % that equal-width bins give a good model."""
    confidence, correct = _top(probs, labels)
    rank = np.empty(len(confidence), dtype=np.int64)
    rank[np.argsort(confidence, kind="stable")] = np.arange(len(confidence))
    bin_of = rank * bins // max(1, len(confidence))
    return _binned_gap(confidence, correct, bin_of, bins)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """The reliability diagram's equal-width bins: confidence range, images, mean confidence, accuracy."""
    confidence, correct = _top(probs, labels)
    bin_of = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        inside = bin_of == b
        out.append({"low": b / bins, "high": (b + 1) / bins, "images": int(inside.sum()),
                    "confidence": float(confidence[inside].mean()) if inside.any() else None,
                    "accuracy": float(correct[inside].mean()) if inside.any() else None})
    return out


def _top(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.max(axis=1), (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)


def calibration_figures(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"nll": nll(probs, labels), "brier": brier(probs, labels), "ece": ece(probs, labels),
            "adaptive_ece": adaptive_ece(probs, labels)}


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on these (validation) images: LBFGS on
    log T in float64, so T stays positive and the problem (convex in 1/T) converges in a few steps. A split the
    network gets entirely right has no minimiser (T → 0); it keeps T = 1."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(y) == 0:
        raise ValueError("no images to fit a temperature on")
    if bool((z.argmax(dim=1) == y).all()):
        # Every image right: the NLL keeps falling as T → 0, so there is no temperature to find, and the floor
        # would make every later answer certain (probabilities of 1e-30) on the strength of a few easy images.
        # With no error to learn from, the network's own probabilities stand.
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    # bounded so a record stays usable even when one error among many easy images pulls T far down
    return float(np.clip(log_t.exp().item(), 0.05, 100.0))
