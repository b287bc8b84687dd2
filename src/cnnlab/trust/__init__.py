"""Probabilities you can trust: measured, calibrated, turned into sets with a coverage guarantee, and refused.

    calibration.py  NLL, Brier, ECE (equal-width bins), adaptive ECE (equal-mass bins), the reliability
                    diagram's bins; one temperature fitted on the validation split (Guo et al. 2017)
    conformal.py    split-conformal prediction sets from APS or RAPS scores (Angelopoulos et al. 2021)
    rejection.py    "unknown": maximum-softmax-probability or energy scores, a threshold chosen on the
                    validation split, the risk–coverage curve, AUROC and FPR at 95 % TPR against foreign images
    fitted.py       `Trust`: what a run fits on its validation split after training (temperature, conformal
                    scores, rejection scores), recorded with the weights and applied by predict, serve and
                    the exported graph's runner alike

Everything here is a pure function of logits and labels (numpy / torch on the CPU), so the same lines
serve the Learner's step after fit, `cnnlab predict`, `serve`, `cnnlab ood` and the tests.
"""
from cnnlab.trust.fitted import Trust, fit_trust, trust_figures

__all__ = ["Trust", "fit_trust", "trust_figures"]
