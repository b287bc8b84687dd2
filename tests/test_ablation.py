"""Ablation: named cumulative steps, the significance test on known inputs, the CLI end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnlab.studies.ablation import compare, load_ablation, parse_ablation, step_configs, welch_p_value
from cnnlab.studies.ablation.stats import bootstrap_diff_ci
from cnnlab.errors import ConfigError
from cnnlab.models import create_model


def test_builtin_ablation_steps_are_cumulative():
    ablation = load_ablation("basenet_pp")
    configs = step_configs(ablation, {})
    assert [s.name for s in ablation.steps] == ["baseline", "augment", "wide", "batchnorm", "dropout"]
    assert [c.model for c in configs] == ["basenet", "basenet", "basenet_wide", "basenet_wide_bn", "basenet_pp"]
    assert configs[0].preprocess.normalize == "none"
    assert all(c.preprocess.normalize == "featurewise" for c in configs[1:])  # carried forward
    assert all(c.preprocess.augment.rotation == 10 and c.preprocess.augment.shift == 0.2 for c in configs[1:])
    for cfg in configs:  # every step's model builds
        create_model(cfg.model, num_classes=25, **cfg.model_args)


def test_custom_steps_and_bad_steps():
    ablation = parse_ablation({"name": "lr", "steps": ["baseline", {"name": "slow", "label": "lr/2",
                                                                     "set": {"train.optimizer.lr": 5e-4}}]})
    configs = step_configs(ablation, {"train.epochs": 1})
    assert configs[1].train.optimizer.lr == 5e-4 and configs[1].train.epochs == 1
    with pytest.raises(ConfigError, match="unknown ablation step 'jitter'"):
        parse_ablation({"steps": ["jitter"]})
    with pytest.raises(ConfigError, match="key 'steps\\[0\\].sett'"):
        parse_ablation({"steps": [{"name": "x", "sett": {}}]})
    bad = parse_ablation({"steps": [{"name": "x", "set": {"train.nope": 1}}]})
    with pytest.raises(ConfigError, match="train.nope"):
        step_configs(bad, {})


def test_welch_matches_a_known_value():
    # scipy.stats.ttest_ind([1,2,3],[4,5,6],equal_var=False): t=-3.674, p=0.02131
    assert welch_p_value([1, 2, 3], [4, 5, 6]) == pytest.approx(0.021311641128756, rel=1e-6)
    assert welch_p_value([1.0], [2.0]) is None
    assert welch_p_value([1, 1], [1, 1]) is None


def test_compare_separates_signal_from_noise():
    clear = compare([0.40, 0.41, 0.42], [0.50, 0.51, 0.52])
    assert clear["verdict"] == "yes: gain" and clear["gain"] == pytest.approx(0.10)
    assert clear["ci_low"] > 0
    noisy = compare([0.6476, 0.60, 0.69], [0.6528, 0.61, 0.68])
    assert noisy["verdict"] == "no: within noise" and noisy["ci_low"] < 0 < noisy["ci_high"]
    low, high = bootstrap_diff_ci([0, 0, 0], [1, 1, 1])
    assert low == high == 1


def test_tiny_ablation_through_the_cli(npz_data, tmp_path):
    config = tmp_path / "abl.yaml"
    config.write_text("name: tiny\nbase: basenet\nsteps: [baseline, augment, {name: wider, label: '+ wide', "
                      "set: {model: basenet_wide}}]\nseeds: [1, 2]\n")
    result = subprocess.run([sys.executable, "-m", "cnnlab", "ablation", "--config", str(config), "--data",
                             str(npz_data), "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "runs"),
                             "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Welch p" in result.stdout and "beyond noise?" in result.stdout
    (group,) = (tmp_path / "runs" / "tiny-ablation").iterdir()
    table = json.loads((group / "ablation.json").read_text())
    assert [s["name"] for s in table["steps"]] == ["baseline", "augment", "wider"]
    for index, step in enumerate(table["steps"]):  # each step's figures are its runs' own
        folder = group / f"{index}-{step['name']}"
        assert step["test_acc"] == [json.loads((folder / f"seed-{s}" / "results.json").read_text())["test_acc"]
                                    for s in (1, 2)]
    for before, after in zip(table["steps"], table["steps"][1:]):  # and each test is of those figures
        expected = compare(before["test_acc"], after["test_acc"], alpha=0.05)
        assert after["vs_previous"] == pytest.approx(expected) and after["vs_previous"]["verdict"] == expected["verdict"]
    assert table["steps"][0]["vs_previous"] is None
    assert (group / "val_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (group / "2-wider" / "seed-2" / "curves.png").is_file()


def test_kfold_reports_heldout_and_test_accuracy(npz_data, tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnlab", "run", "basenet", "--data", str(npz_data), "--folds", "3",
                             "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "runs"), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3-fold cross-validation" in result.stdout and "held-out accuracy" in result.stdout
    (group,) = (tmp_path / "runs" / "basenet").iterdir()
    summary = json.loads((group / "summary.json").read_text())
    assert summary["folds"] == 3 and len(summary["runs"]) == 3
    held = [r["final_val_acc"] for r in summary["runs"]]
    assert summary["heldout_acc_mean"] == pytest.approx(sum(held) / 3, abs=1e-12)
    sizes = [(r["num_train"], r["num_val"]) for r in summary["runs"]]
    assert all(t + v == 160 for t, v in sizes)  # each fold covers the whole training set


def test_interrupted_ablation_resumes_to_the_full_table(npz_data, tmp_path):
    from cnnlab.studies.ablation import run_ablation
    from cnnlab.errors import RunInterrupted
    from cnnlab.studies import resume

    ablation = parse_ablation({"name": "tiny", "steps": ["baseline", "augment"], "seeds": [1, 2]})
    # one process, so the log below sees every epoch line (seeds together stop by signal: test_seeds_together)
    overrides = {"data.path": str(npz_data), "train.epochs": 2, "device": "cpu", "seeds_together": "off"}
    seen = []

    def stop_in_step_two(line):
        seen.append(line)
        if "step 1/1:" in " ".join(seen) and line.startswith("epoch   1/"):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as interrupted:
        run_ablation(ablation, base_overrides=overrides, out=str(tmp_path), progress=False, log=stop_in_step_two)
    (group,) = (tmp_path / "tiny-ablation").iterdir()
    # one command finishes everything: the message names the ablation folder, not a seed folder
    assert str(interrupted.value).endswith(f"Continue with: cnnlab resume {group}")
    assert not (group / "ablation.json").exists()
    resume(group, progress=False, log=lambda s: None)
    table = json.loads((group / "ablation.json").read_text())
    assert [len(s["test_acc"]) for s in table["steps"]] == [2, 2]
