"""Honest tables: no spread claimed from one run, no verdict from too few, timings that mean what they say."""
from __future__ import annotations

from cnnlab.reference import lab_reference
from cnnlab.reporting.tables import ablation_table, pm, seeds_table


def test_a_single_run_claims_no_spread():
    assert pm([0.5], percent=True) == "50.00 %" and pm([0.5, 0.6], percent=True) == "55.00 ± 7.07 %"
    table = seeds_table([{"seed": 3, "test_loss": 1.0, "test_acc": 0.5, "median_epoch_time_s": 2.0,
                          "one_off_time_s": 30.0}], None)
    assert "±" not in table and "mean" not in table and "30.0" in table


def test_the_lab_is_a_row_of_its_own_not_paired_with_seeds():
    results = [{"seed": s, "test_loss": 2.0, "test_acc": 0.4, "median_epoch_time_s": 1.0, "one_off_time_s": 0.0}
               for s in (1, 2, 3)]
    lines = seeds_table(results, lab_reference("basenet")).splitlines()
    assert lines[0].split()[:2] == ["seed", "test"] and "lab" not in lines[0]
    assert lines[-1].startswith("lab (3 runs)") and "41.36 %" in lines[-1]
    assert all("42.60" not in line for line in lines)  # the lab's first run is not set beside seed 1


def test_an_ablation_with_two_runs_per_step_gives_gains_but_no_verdict():
    comparison = {"gain": 0.1, "p_value": 0.01, "ci_low": 0.05, "ci_high": 0.15, "verdict": "yes: gain"}
    rows = [{"step": 0, "label": "a", "model": "m", "test_acc": [0.4, 0.41], "test_loss": [1, 1], "lab": None,
             "vs_previous": None},
            {"step": 1, "label": "b", "model": "m", "test_acc": [0.5, 0.51], "test_loss": [1, 1], "lab": None,
             "vs_previous": comparison}]
    table = ablation_table(rows, 0.05)
    assert "+10.00 pts" in table and "n/a (< 3 runs)" in table and "yes: gain" not in table
    rows[0]["test_acc"], rows[1]["test_acc"] = [0.4, 0.41, 0.42], [0.5, 0.51, 0.52]
    assert "yes: gain" in ablation_table(rows, 0.05)
