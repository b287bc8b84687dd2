"""What a new user met first, each fixed and kept fixed: one clear line, nothing half-made on disk."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import yaml

from cnnlab.cli.main import main
from cnnlab.config import load_experiment
from cnnlab.errors import RunInterrupted
from cnnlab.studies import resume, run_experiment

TINY_BIRDS = ["--set", "data.image_size=64", "--set", "data.workers=0", "--batch-size", "4", "--device", "cpu",
              "--no-progress"]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: "), err
    return lines[0]


def test_an_npz_with_no_images_names_the_file_and_makes_no_folder(tmp_path, capsys):
    data = tmp_path / "empty"
    data.mkdir()
    np.savez(data / "train.npz", images=np.zeros((0, 8, 8, 3), np.uint8), labels=np.zeros(0, int),
             class_names=np.array(["a", "b"]))
    np.savez(data / "test.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.zeros(2, int))
    code, _, err = cli(capsys, "run", "basenet", "--data", data, "--out", tmp_path / "runs", "--device", "cpu")
    assert code == 2
    assert f"{data / 'train.npz'}: holds no images" in one_line_error(err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("option, value, key, expected", [
    ("--epochs", -1, "train.epochs", "expected a value >= 1, got -1"),
    ("--batch-size", 0, "train.batch_size", "expected a value >= 1, got 0"),
    ("--folds", 99, "data.folds", "expected a value <= 50, got 99"),
])
def test_a_bad_option_value_names_the_option_not_the_preset_file(capsys, option, value, key, expected):
    code, _, err = cli(capsys, "run", "basenet", option, value)
    line = one_line_error(err)
    assert code == 2 and line == f"cnnlab: error: {option}: key '{key}': {expected}"


def test_set_names_itself_too(capsys):
    code, _, err = cli(capsys, "run", "basenet", "--set", "train.optimizer.lr=-1")
    assert one_line_error(err) == "cnnlab: error: --set train.optimizer.lr: key 'train.optimizer.lr': expected a value > 0.0, got -1.0"


def test_epochs_sets_the_length_of_a_single_phase_and_is_refused_for_several():
    cfg = load_experiment("birdnet_v0", overrides={"train.epochs": 5}, origins={"train.epochs": "--epochs"})
    assert [p.epochs for p in cfg.train.phases] == [5]
    with pytest.raises(Exception, match=r"--epochs: key 'train.epochs': this experiment trains in phases "
                                        r"\(warm-up: 10, unfreeze-14x14: 10\); set train.phases.N.epochs"):
        load_experiment("birdnet_v4", overrides={"train.epochs": 5}, origins={"train.epochs": "--epochs"})


@pytest.mark.parametrize("content", ["text", "list", "pickle-code", "empty-dict", "truncated"])
def test_a_weights_file_that_is_not_weights_is_one_line_and_no_folder(tmp_path, capsys, birds_lab, content):
    path = tmp_path / "not-weights.pth"
    if content == "text":
        path.write_text("hello")
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif content == "pickle-code":
        import pickle

        path.write_bytes(pickle.dumps(Path("/")))  # needs code to unpickle: refused by weights_only
    elif content == "empty-dict":
        torch.save({}, path)
    else:
        torch.save({"a": torch.zeros(3)}, path)
        path.write_bytes(path.read_bytes()[:40])
    code, _, err = cli(capsys, "run", "birdnet_v0", "--data", birds_lab, "--backbone", "efficientnet_lite0",
                       "--weights", path, "--out", tmp_path / "runs", *TINY_BIRDS)
    line = one_line_error(err)
    assert code == 2 and str(path) in line and "weights_only" not in line
    assert "expected a state dict (torchvision/timm .pth), a cnnlab checkpoint.pt or a .safetensors file" in line
    assert not (tmp_path / "runs").exists()


def test_a_cnnlab_checkpoint_and_safetensors_work_as_backbone_weights(tmp_path, birds_lab):
    """Weights of an earlier cnnlab run (its checkpoint or model.safetensors) can seed a new backbone."""
    common = {"data.path": str(birds_lab), "data.image_size": 64, "data.workers": 0, "train.batch_size": 4,
              "device": "cpu", "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none",
              "train.phases.0.epochs": 1, "train.feature_cache": False, "out": str(tmp_path / "a")}
    first = run_experiment(load_experiment("birdnet_v0", overrides=common), progress=False, log=lambda s: None)
    from cnnlab.models import create_model
    from cnnlab.training.checkpoint import load_checkpoint

    # A frozen-backbone phase's checkpoint names the file with the backbone; loading completes it.
    trained = load_checkpoint(first / "seed-1" / "checkpoint.pt")["model"]
    for weights in (first / "seed-1" / "checkpoint.pt", first / "seed-1" / "model.safetensors"):
        model = create_model("birdnet_v1", num_classes=3, backbone="efficientnet_lite0", weights=str(weights))
        for key, value in model.backbone.state_dict().items():
            assert torch.equal(value, trained[f"backbone.{key}"]), key


def test_files_honour_the_umask(tmp_path, npz_data):
    old = os.umask(0o022)
    try:
        cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 1, "device": "cpu",
                                                    "out": str(tmp_path / "runs")})
        folder = run_experiment(cfg, progress=False, log=lambda s: None)
    finally:
        os.umask(old)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


def test_the_recorded_configuration_says_how_many_classes_were_used(tmp_path):
    data = tmp_path / "thirty"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 90), ("test", 30)):
        np.savez(data / f"{split}.npz", images=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
                 labels=np.arange(n) % 30)
    cfg = load_experiment("basenet", overrides={"data.path": str(data), "train.epochs": 1, "device": "cpu",
                                                "data.val_fraction": 0.0, "out": str(tmp_path / "runs")})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    assert yaml.safe_load((folder / "experiment.yaml").read_text())["data"]["num_classes"] == 30
    assert yaml.safe_load((folder / "seed-1" / "config.yaml").read_text())["data"]["num_classes"] == 30
    # ... and the recorded configuration still loads (resume reads it)
    assert load_experiment(folder / "experiment.yaml").data.num_classes == 30


def test_weights_that_cannot_be_downloaded_say_the_two_ways_on(tmp_path, capsys, birds_lab, monkeypatch):
    from cnnlab.models import backbones

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached there
    monkeypatch.setattr(backbones, "_SOURCE_STATES", {})

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, _, err = cli(capsys, "run", "birdnet_v0", "--data", birds_lab, "--out", tmp_path / "runs", *TINY_BIRDS)
    line = one_line_error(err)
    assert code == 2
    assert "could not download the ImageNet weights 'imagenet1k_v1' of backbone 'resnet50'" in line
    assert "resnet50-0676ba61.pth" in line and str(tmp_path / "torch-home") in line
    assert "--weights PATH" in line and "--backbone efficientnet_lite0" in line
    assert not (tmp_path / "runs").exists()


def test_a_bird_experiment_without_data_says_it_needs_a_bird_folder(capsys, tmp_path):
    for args in (["run", "birdnet_v0"], ["compare", "birdnet_v0", "birdnet_v1"]):
        code, _, err = cli(capsys, *args)
        line = one_line_error(err)
        assert code == 2 and "experiment 'birdnet_v0' fine-tunes a pretrained network on photographs: give --data PATH, a bird folder" in line
        assert "CIFAR" not in line
    assert list(tmp_path.iterdir()) == []  # the test's working folder: nothing was made


def test_a_failure_after_the_folder_exists_marks_it_failed(tmp_path, capsys, birds_lab):
    code, _, err = cli(capsys, "run", "birdnet_v0", "--data", birds_lab, "--backbone", "efficientnet_lite0",
                       "--weights", "none", "--set", "preprocess.normalize=featurewise", "--out", tmp_path / "runs",
                       *TINY_BIRDS)
    line = one_line_error(err)
    assert code == 2 and "featurewise needs an in-memory dataset" in line
    (folder,) = (tmp_path / "runs" / "birdnet_v0").iterdir()
    for status in (folder / "status.json", folder / "seed-1" / "status.json"):
        recorded = json.loads(status.read_text())
        assert recorded["state"] == "failed" and "featurewise needs an in-memory dataset" in recorded["message"]


def test_resuming_a_seed_folder_finishes_the_whole_experiment(tmp_path, npz_data):
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 2, "seeds": [1, 2],
                                                "device": "cpu", "out": str(tmp_path / "runs"), "seeds_together": "off"})
    lines = []

    def stop_in_seed_one(line):
        lines.append(line)
        if line.startswith("epoch   1/"):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as interrupted:
        run_experiment(cfg, progress=False, log=stop_in_seed_one)
    (folder,) = (tmp_path / "runs" / "basenet").iterdir()
    assert str(interrupted.value).endswith(f"Continue with: cnnlab resume {folder}")
    assert "— seed 1 (1/2) —" in [line.strip() for line in lines]
    resume(folder / "seed-1", progress=False, log=lines.append)
    assert (folder / "seed-1" / "results.json").is_file() and (folder / "seed-2" / "results.json").is_file()
    assert [r["seed"] for r in json.loads((folder / "summary.json").read_text())["runs"]] == [1, 2]
    assert "— seed 2 (2/2) —" in [line.strip() for line in lines]
