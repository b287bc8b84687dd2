"""The command line called as a user calls it: a subprocess, real output, real exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def cnnlab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("args", [[], ["run"], ["ablation"], ["compare"], ["summary"], ["list"], ["resume"]])
def test_help_everywhere(args, capsys):
    from cnnlab.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0 and "usage: cnnlab" in capsys.readouterr().out


def test_summary_shows_the_lab_table():
    result = cnnlab("summary", "basenet")
    assert result.returncode == 0
    for fragment in ("(None, 28, 28, 6)", "(None, 5, 5, 16)", "(None, 400)", "20,050",
                     "Total params: 24,197", "Trainable params: 24,197", "Non-trainable params: 0"):
        assert fragment in result.stdout


def test_list_names_models_presets_and_sources():
    result = cnnlab("list")
    assert result.returncode == 0
    assert "basenet" in result.stdout and "npz" in result.stdout and "imagefolder" in result.stdout


def test_run_with_seeds_prints_mean_and_writes_folders(npz_data, tmp_path):
    result = cnnlab("run", "basenet", "--data", npz_data, "--epochs", 2, "--batch-size", 32, "--seeds", 1, 2,
                    "--device", "cpu", "--out", tmp_path / "runs", "--no-progress")
    assert result.returncode == 0, result.stderr
    # npz files are not the lab's data (its official CIFAR-100 split): no lab row beside these seeds
    assert "mean ± std" in result.stdout and "41.36 %" not in result.stdout
    groups = list((tmp_path / "runs" / "basenet").iterdir())
    assert len(groups) == 1
    summary = json.loads((groups[0] / "summary.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [1, 2]


def test_config_file_alone_and_options_override_it(npz_data, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f"name: mine\nmodel: basenet\ndata:\n  path: {npz_data}\ntrain:\n  epochs: 5\n"
                      f"seeds: [7]\nout: {tmp_path / 'runs'}\ndevice: cpu\n")
    result = cnnlab("run", "--config", config, "--epochs", 1, "--no-progress")
    assert result.returncode == 0, result.stderr
    (group,) = (tmp_path / "runs" / "mine").iterdir()
    results = json.loads((group / "seed-7" / "results.json").read_text())
    assert results["epochs"] == 1 and results["seed"] == 7


@pytest.mark.parametrize("args, fragment", [
    (["run", "nosuchnet"], "unknown model 'nosuchnet'; valid models: basenet"),
    (["run", "basenet", "--data", "/does/not/exist"], "/does/not/exist: data folder does not exist"),
    (["run", "basenet", "--set", "train.epoch=3"], "key 'train.epoch': unknown key"),
    (["run", "basenet", "--epochs", "0"], "key 'train.epochs': expected a value >= 1"),
    (["summary", "nosuchnet"], "valid models"),
    (["resume", "/does/not/exist"], "run folder does not exist"),
])
def test_bad_input_is_one_clear_line_without_traceback(args, fragment):
    result = cnnlab(*args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    result = cnnlab("--debug", "run", "nosuchnet")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_summary_shows_the_images_the_experiment_trains_on():
    recipe = cnnlab("summary", "birdnet_recipe", "--backbone", "efficientnet_lite2")  # its weights' 260 px
    assert recipe.returncode == 0, recipe.stderr
    assert "(None, 130, 130, 32)" in recipe.stdout  # the stem halves 260
    lab = cnnlab("summary", "birdnet_v4", "--backbone", "efficientnet_lite2")  # the lab's 224 px
    assert lab.returncode == 0, lab.stderr
    assert "(None, 112, 112, 32)" in lab.stdout


def test_summary_of_birdnet_v1_needs_no_weights_and_shows_the_lab_head():
    result = cnnlab("summary", "birdnet_v1")
    assert result.returncode == 0, result.stderr
    for fragment in ("(None, 768)", "1,573,632", "(None, 200)", "Trainable params: 2,071,496",
                     "Non-trainable params: 23,562,688", "Total params: 25,634,184"):
        assert fragment in result.stdout
    assert "Downloading" not in result.stderr
