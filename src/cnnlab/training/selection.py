"""Which epoch's weights to keep, and when to stop: decided from the metrics history alone.

Both are functions of `metrics.csv`'s rows, so a resumed run decides exactly as an
uninterrupted one (only the kept weights themselves travel in the checkpoint).
"""
from __future__ import annotations

from cnnlab.config import EarlyStoppingConfig


def improves(value: float, best: float | None, monitor: str, min_delta: float = 0.0) -> bool:
    """Lower is better for a loss, higher for an accuracy; by more than `min_delta`."""
    if best is None:
        return True
    return value < best - min_delta if monitor == "val_loss" else value > best + min_delta


def epochs_without_improvement(values: list[float], monitor: str, min_delta: float) -> int:
    best, wait = None, 0
    for value in values:
        if improves(value, best, monitor, min_delta):
            best, wait = value, 0
        else:
            wait += 1
    return wait


def should_stop(phase_rows: list[dict], cfg: EarlyStoppingConfig) -> bool:
    """Keras's EarlyStopping over one phase's epochs: `patience` epochs without an improvement."""
    if cfg.monitor == "off" or not phase_rows:
        return False
    values = [row[cfg.monitor] for row in phase_rows]
    return epochs_without_improvement(values, cfg.monitor, cfg.min_delta) >= cfg.patience
