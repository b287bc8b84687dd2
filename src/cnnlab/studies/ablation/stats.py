"""Is a step's gain larger than seed-to-seed noise? Welch's t-test and a bootstrap interval."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def welch_p_value(before: Sequence[float], after: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None when undefined.

    Undefined with fewer than two runs on a side, or when both sides have zero spread.
    """
    if len(before) < 2 or len(after) < 2:
        return None
    if np.ptp(before) <= 1e-12 and np.ptp(after) <= 1e-12:  # equal up to rounding (0.1 + 0.2 vs 0.3)
        return None
    import warnings

    from scipy import stats  # imported when a test is made, not with every `cnnlab run` (seconds)

    with warnings.catch_warnings():
        # seeds that agree to the last digits on one side make scipy warn of "precision loss" on the user's
        # terminal; the p-value it returns is still the test's answer (or nan, read as undefined below)
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(after, before, equal_var=False).pvalue
    return None if math.isnan(p) else float(p)


def bootstrap_diff_ci(before: Sequence[float], after: Sequence[float], *, level: float = 0.95,
                      resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(after) - mean(before), resampling runs in each group."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(before, float), np.asarray(after, float)
    diffs = (rng.choice(b, (resamples, len(b))).mean(1) - rng.choice(a, (resamples, len(a))).mean(1))
    tail = (1 - level) / 2
    return float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))


def compare(before: Sequence[float], after: Sequence[float], *, alpha: float = 0.05) -> dict:
    """Gain of `after` over `before`, with the Welch p-value, the bootstrap CI and a verdict."""
    gain = float(np.mean(after) - np.mean(before))
    p = welch_p_value(before, after)
    low, high = bootstrap_diff_ci(before, after, level=1 - alpha)
    if p is None:
        verdict = "undecided (needs ≥2 runs with spread)"
    elif p < alpha and (low > 0 or high < 0):
        verdict = "yes: gain" if gain > 0 else "yes: loss"
    else:
        verdict = "no: within noise"
    return {"gain": gain, "p_value": p, "ci_low": low, "ci_high": high, "verdict": verdict}
