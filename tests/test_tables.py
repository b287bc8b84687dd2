"""Honest tables: no spread claimed from one run, no verdict from too few, timings that mean what they say."""
from __future__ import annotations

from cnnlab.reference import lab_reference
from cnnlab.reporting.tables import ablation_table, compare_table, pm, seeds_table


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
    assert lines[-1].startswith("lab: Keras, official CIFAR-100 split, 3 runs") and "41.36 %" in lines[-1]
    assert all("42.60" not in line for line in lines)  # the lab's first run is not set beside seed 1
    same = seeds_table(results, {**lab_reference("basenet"), "same_protocol": True}).splitlines()
    assert same[-1].startswith("lab (3 runs, same protocol)")


def test_the_lab_sits_beside_a_variant_only_on_its_own_protocol():
    row = {"name": "birdnet_v0", "test_acc": [0.8], "test_loss": [0.5], "wall_time_s": [1.0],
           "lab": lab_reference("birdnet_v0")}
    lines = compare_table([row]).splitlines()
    assert lines[2].split()[-2:] == ["—", "—"]  # nothing beside the Lite0 / 50-class result
    assert lines[3].startswith("lab: Keras ResNet50, CUB-200 (2010), 200 classes, 1 run (birdnet_v0)")
    assert "42.57 %" in lines[3]
    lines = compare_table([{**row, "lab": {**row["lab"], "same_protocol": True}}]).splitlines()
    assert len(lines) == 3 and lines[2].split()[-3:] == ["42.57", "%", "2.3210"]


def test_a_run_follows_the_lab_protocol_only_when_it_computes_the_same_thing():
    from cnnlab.config import load_experiment
    from cnnlab.studies.experiment import follows_lab_protocol, protocol_differences

    preset = load_experiment("basenet")
    faster = load_experiment("basenet", overrides={"train.amp": "bf16", "device": "cpu", "seeds": [4],
                                                   "data.path": "/somewhere"})
    assert protocol_differences(faster, preset) == []
    shorter = load_experiment("basenet", overrides={"train.epochs": 5, "data.subset": 100})
    assert protocol_differences(shorter, preset) == ["data.subset", "train.epochs"]
    sizes = [{"num_train": 11250, "num_val": 1250, "num_test": 2500}]
    faster.data.num_classes = 25
    assert follows_lab_protocol("basenet", faster, preset, sizes)
    assert not follows_lab_protocol("basenet", faster, preset, [{**sizes[0], "num_test": 500}])
    assert not follows_lab_protocol("basenet", shorter, preset, sizes)


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


def test_the_lab_is_a_reference_only_on_the_labs_data_and_says_what_differs():
    from cnnlab.config import load_experiment
    from cnnlab.reporting.tables import seeds_table
    from cnnlab.studies.experiment import lab_for

    sizes = [{"num_train": 11250, "num_val": 1250, "num_test": 2500}]
    official = load_experiment("basenet", overrides={"data.source": "cifar100-folder", "data.path": "/c",
                                                     "device": "cpu", "seeds": [4]})
    assert lab_for(official, sizes)["same_protocol"] is True  # the lab's data and recipe: a like-for-like row
    # a run records the task it resolved from its data; the preset's `task: auto` computes the same thing
    official.task = "single"
    assert lab_for(official, sizes)["same_protocol"] is True
    shorter = load_experiment("basenet", overrides={"data.source": "cifar100", "train.epochs": 5})
    lab = lab_for(shorter, [{**sizes[0], "num_test": 500}])
    assert not lab["same_protocol"] and lab["differs"] == ["test images 500 (lab 2500)", "train.epochs 5 (lab 50)"]
    row = seeds_table([{"seed": 1, "test_loss": 1.0, "test_acc": 0.5}], lab).splitlines()[-1]
    assert row.startswith("lab: Keras, official CIFAR-100 split, 3 runs; differs: test images 500 (lab 2500), "
                          "train.epochs 5 (lab 50)")
    # the same sizes in npz files (a re-split subset), or class folders of one's own photos: no reference at all
    for source in ("npz", "classfolder"):
        assert lab_for(load_experiment("basenet", overrides={"data.source": source, "data.path": "/x"}), sizes) is None
    birds = load_experiment("birdnet_v0", overrides={"data.source": "classfolder", "data.path": "/photos",
                                                     "data.num_classes": 10})
    assert lab_for(birds, [{"num_train": 90, "num_val": 10, "num_test": 30}]) is None
