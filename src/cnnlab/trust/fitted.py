"""`Trust`: what a run fits on its validation split once training is over, kept beside the weights.

    temperature        softmax(logits / T) is the probability predict, serve and the exported graph's runner
                       answer (1.0 with train.calibration: none)
    conformal scores   the calibration images' non-conformity scores, sorted: any coverage asked for later
                       (`predict --coverage 0.9`) takes its quantile from them
    rejection scores   the validation images' msp and energy scores, sorted: any reject rate asked for later
                       (`predict --reject-rate 0.05`) takes its threshold from them

Nothing here reads the test split: `fit_trust` is handed the validation split's logits (the Learner's step
after fit), and the test split is only measured with what was fitted (`trust_figures`).
With `data.calibration_fraction` f > 0, a seeded share f of the validation images is held for the conformal
scores and the rest fits the temperature and the rejection scores; with 0, the whole validation split does
both (one fitted parameter barely moves the scores, and the test split's coverage in results.json is the check).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

import cnnlab.records as records
from cnnlab.config import CALIBRATIONS, CONFORMAL_SCORES, REJECT_SCORES
from cnnlab.trust import calibration, conformal, rejection

COVERAGES = (0.8, 0.9, 0.95)  # what results.json and the report measure on the test split
REPORTED_REJECT_RATE = 0.05  # the rule results.json measures: refuse what scores below 95 % of validation images
MAX_SCORES = 1_000_000

_SCORES = records.list_of(records.number(), max_len=MAX_SCORES)
TRUST_SCHEMA = {
    "calibration": records.choice(*CALIBRATIONS),
    "temperature": records.number(above=0.0, at_most=1000.0),
    "fitted_on": records.text(), "conformal_on": records.text(),
    "conformal_score": records.choice(*CONFORMAL_SCORES),
    "raps_lambda": records.number(at_least=0.0, at_most=1.0), "raps_k": records.integer(at_least=0),
    "conformal_scores": records.list_of(records.number(), min_len=1, max_len=MAX_SCORES),
    "reject_score": records.choice(*REJECT_SCORES),
    "msp_scores": _SCORES, "energy_scores": _SCORES,
}


class TrustError(ValueError):
    """A coverage or reject rate this record cannot answer (said to the user in one line)."""


@dataclass
class Trust:
    calibration: str
    temperature: float
    fitted_on: str
    conformal_on: str
    conformal_score: str
    raps_lambda: float
    raps_k: int
    conformal_scores: list[float]
    reject_score: str
    msp_scores: list[float]
    energy_scores: list[float]

    # ------------------------------------------------------------------ applying it

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities of raw logits."""
        return torch.softmax(logits.float() / self.temperature, dim=1)

    def sets(self, probs, coverage: float) -> list[list[int]]:
        """Each image's conformal set of class indices for `coverage` (e.g. 0.9), most likely first."""
        if not 0.0 < coverage < 1.0:
            raise TrustError(f"--coverage must lie strictly between 0 and 1 (e.g. 0.9), got {coverage}")
        qhat = conformal.quantile(np.asarray(self.conformal_scores), coverage)
        return conformal.prediction_sets(_numpy(probs), qhat, method=self.conformal_score, lam=self.raps_lambda,
                                         k_reg=self.raps_k)

    def scores(self, logits, kind: str | None = None) -> np.ndarray:
        return rejection.rejection_scores(_numpy(logits), self.temperature, kind or self.reject_score)

    def threshold(self, reject_rate: float, kind: str | None = None) -> float:
        if not 0.0 <= reject_rate < 1.0:
            raise TrustError(f"--reject-rate must lie in [0, 1) (e.g. 0.05: refuse what scores below 95 % of the "
                             f"validation images), got {reject_rate}")
        kind = kind or self.reject_score
        return rejection.threshold(np.asarray(self.msp_scores if kind == "msp" else self.energy_scores), reject_rate)

    def accepted(self, logits, reject_rate: float, kind: str | None = None) -> np.ndarray:
        """True for each image the rule accepts; False: answer `unknown`."""
        return self.scores(logits, kind) >= self.threshold(reject_rate, kind)

    # ------------------------------------------------------------------ the record

    def to_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record, source) -> "Trust | None":
        """The trust of a model's record (None: trained before cnnlab 0.13, or without a validation split)."""
        if record is None:
            return None
        checked = records.check(record, TRUST_SCHEMA, f"{source}: field 'trust'", what="the calibration record")
        return cls(**{name: checked[name] for name in TRUST_SCHEMA})


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def fit_trust(logits, labels, *, calibration_mode: str = "temperature", fraction: float = 0.0, seed: int = 0,
              conformal_score: str = "lac", raps_lambda: float = 0.01, raps_k: int = 1,
              reject_score: str = "energy") -> Trust:
    """Fit everything on the validation split's raw logits and labels (see the module's docstring)."""
    logits, labels = _numpy(logits), _numpy(labels).astype(np.int64)
    n = len(labels)
    fit, held = np.arange(n), np.arange(n)
    fitted_on = conformal_on = f"validation split ({n} images)"
    if fraction > 0.0:
        order = np.random.default_rng(seed).permutation(n)
        cut = int(round(fraction * n))
        if cut < 1 or cut >= n:
            raise TrustError(f"data.calibration_fraction {fraction} of {n} validation images leaves no images for "
                             "one of its two parts; use 0 (the whole validation split for both) or more images")
        held, fit = np.sort(order[:cut]), np.sort(order[cut:])
        fitted_on = f"validation split less its conformal share ({len(fit)} images)"
        conformal_on = f"a seeded share {fraction:g} of the validation split ({len(held)} images)"
    temperature = calibration.fit_temperature(logits[fit], labels[fit]) if calibration_mode == "temperature" else 1.0
    probs = calibration.softmax(logits[held], temperature)
    # the randomised scores' U from a generator of their own, so a record is the same however often it is fitted
    cal = conformal.scores(probs, labels[held], method=conformal_score, lam=raps_lambda, k_reg=raps_k,
                           rng=np.random.default_rng([seed, 7919]))
    return Trust(
        calibration=calibration_mode, temperature=temperature, fitted_on=fitted_on, conformal_on=conformal_on,
        conformal_score=conformal_score, raps_lambda=raps_lambda, raps_k=raps_k,
        conformal_scores=np.sort(cal).tolist(), reject_score=reject_score,
        msp_scores=np.sort(rejection.rejection_scores(logits[fit], temperature, "msp")).tolist(),
        energy_scores=np.sort(rejection.rejection_scores(logits[fit], temperature, "energy")).tolist())


def trust_figures(trust: Trust, logits, labels, *, prefix: str = "test") -> tuple[dict, dict]:
    """What `trust` gives on a split (the test split, which fitted none of it): results.json's flat fields
    (`test_ece`, `test_coverage_90`, ...) and the curves behind the report's figures (trust.json)."""
    logits, labels = _numpy(logits), _numpy(labels).astype(np.int64)
    raw = calibration.softmax(logits)
    probs = calibration.softmax(logits, trust.temperature)
    after, before = calibration.calibration_figures(probs, labels), calibration.calibration_figures(raw, labels)
    fields: dict = {"calibration": trust.calibration, "temperature": trust.temperature,
                    **{f"{prefix}_{k}": v for k, v in after.items()},
                    **{f"{prefix}_{k}_uncalibrated": v for k, v in before.items()}}
    coverage = {}
    for c in COVERAGES:
        figures = conformal.coverage_figures(trust.sets(probs, c), labels)
        fields[f"{prefix}_coverage_{round(100 * c)}"] = figures["coverage"]
        fields[f"{prefix}_set_size_{round(100 * c)}"] = figures["mean_size"]
        coverage[str(c)] = figures
    correct = probs.argmax(1) == labels
    score = trust.scores(logits)
    accepted = score >= trust.threshold(REPORTED_REJECT_RATE)
    fields[f"{prefix}_accepted_share"] = float(accepted.mean())
    fields[f"{prefix}_accepted_acc"] = float(correct[accepted].mean()) if accepted.any() else None
    fields[f"{prefix}_aurc"] = rejection.aurc(score, correct)
    curves = {"split": prefix, "temperature": trust.temperature, "calibration": trust.calibration,
              "fitted_on": trust.fitted_on, "conformal_on": trust.conformal_on,
              "conformal_score": trust.conformal_score, "reject_score": trust.reject_score,
              "reject_rate": REPORTED_REJECT_RATE,
              "reliability_uncalibrated": calibration.reliability_bins(raw, labels),
              "reliability": calibration.reliability_bins(probs, labels),
              "coverage": coverage, "risk_coverage": rejection.risk_coverage(score, correct),
              "figures": {k: v for k, v in fields.items() if k.startswith(prefix)}}
    return fields, curves
