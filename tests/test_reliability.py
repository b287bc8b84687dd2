"""Runs survive interruption; bad input gets one clear error; nothing is lost or overwritten."""
from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cnnlab.config import DataConfig, load_experiment
from cnnlab.data import load_splits
from cnnlab.errors import CheckpointError, ConfigError, DataError, RunInterrupted, TrainingDiverged
from cnnlab.fileio import create_unique_dir
from cnnlab.studies import resume, run_experiment
from cnnlab.training import learner as run_module
from conftest import BIRD_CLASSES, interrupt_after, png_bytes

PHASED = {"model": "basenet_pp", "train.batch_size": 32, "device": "cpu", "seeds": [5],
          "preprocess.augment.hflip": True, "preprocess.augment.shift": 0.1, "preprocess.normalize": "featurewise",
          "train.phases": [{"name": "head", "epochs": 2, "trainable": ["head"]},
                           {"name": "all", "epochs": 2, "trainable": ["all"], "lr": 5e-4}]}


def _metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(handle)]


# A linear-probe-then-fine-tune policy: its first phase trains on cached backbone features.
PROBE_THEN_TUNE = {**PHASED, "train.feature_cache_dir": None,
                   "train.phases": [{"name": "probe", "epochs": 2, "trainable": ["head"], "augment": False},
                                    {"name": "all", "epochs": 2, "trainable": ["all"], "lr": 5e-4}]}


@pytest.mark.parametrize("policy, stop_after", [(PHASED, 1), (PHASED, 2), (PHASED, 3), (PROBE_THEN_TUNE, 2)])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(npz_data, tmp_path, policy, stop_after):
    """Including across the frozen → unfrozen phase change (stop after epoch 2)."""
    policy = {**policy, "train.feature_cache_dir": str(tmp_path / "fc")} if "train.feature_cache_dir" in policy \
        else policy
    cfg = load_experiment("basenet", overrides={**policy, "data.path": str(npz_data), "out": str(tmp_path / "a")})
    whole = run_experiment(cfg, progress=False, log=lambda s: None) / "seed-5"
    cfg.out = str(tmp_path / "b")
    with pytest.raises(RunInterrupted, match="cnnlab resume"):
        run_experiment(cfg, progress=False, log=interrupt_after(stop_after))
    (group,) = (tmp_path / "b" / cfg.experiment_name).iterdir()
    part = group / "seed-5"
    assert json.loads((part / "status.json").read_text())["state"] == "interrupted"
    assert len(_metrics(part)) == stop_after and not (part / "results.json").exists()
    if stop_after <= 2:  # in the head phase: the frozen backbone is written once, not every epoch
        saved = torch.load(part / "checkpoint.pt", weights_only=True)
        assert saved["base_file"] == "checkpoint-phase0-start.pt" and (part / saved["base_file"]).is_file()
        assert not any(k.startswith("backbone.") and k.endswith("weight") for k in saved["model"])
    resume(group, progress=False, log=lambda s: None)
    assert _metrics(part) == _metrics(whole)
    assert not list(part.glob("checkpoint-phase*")), "the frozen phase's file outlived the checkpoints naming it"
    a, b = (json.loads((f / "results.json").read_text()) for f in (whole, part))
    assert (a["test_loss"], a["test_acc"]) == (b["test_loss"], b["test_acc"])
    wa, wb = load_file(str(whole / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (group / "summary.json").is_file()


def _interruptible() -> None:
    # A test runner started in the background by a script (`pytest &`) has SIGINT ignored, and a
    # child inherits that: Python then never turns Ctrl-C into KeyboardInterrupt. Start each
    # cnnlab as a terminal's foreground command would be.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cnnlab(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible, **kwargs)


def _wait_for_epochs(root: Path, count: int, process, timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(root.glob("*/*/seed-*/metrics.csv"))
        if found and len(found[0].read_text().strip().splitlines()) > count:
            return found[0].parent
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not reach the epoch in time")


def test_ctrl_c_stops_cleanly_after_saving(npz_data, tmp_path):
    process = _cnnlab("run", "basenet_pp", "--data", npz_data, "--epochs", 50, "--seeds", 1, "--device", "cpu",
                      "--out", tmp_path / "runs", "--no-progress", "--set", "data.subset=100")
    folder = _wait_for_epochs(tmp_path / "runs", 1, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    # the experiment folder, whose resume finishes every seed, is named (not the seed folder)
    assert "Traceback" not in stderr and stderr.rstrip().endswith(f"cnnlab resume {folder.parent}")
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "interrupted" and status["epoch"] >= 1
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"] == status["epoch"]


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(npz_data, tmp_path, monkeypatch):
    original = run_module.BatchPreprocessor.__call__
    calls = {"train": 0}

    def poisoned(self, images, *, train, generator=None):
        x = original(self, images, train=train, generator=generator)
        if train:
            calls["train"] += 1
            if calls["train"] == 7:  # epoch 2 (5 batches of 32 per epoch), step 2
                x = x * float("nan")
        return x

    monkeypatch.setattr(run_module.BatchPreprocessor, "__call__", poisoned)
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.batch_size": 32, "seeds": [1],
                                                "train.epochs": 4, "device": "cpu", "out": str(tmp_path)})
    with pytest.raises(TrainingDiverged, match="epoch 2, step 2"):
        run_experiment(cfg, progress=False, log=lambda s: None)
    (folder,) = tmp_path.glob("*/*/seed-1")
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert json.loads((folder / "status.json").read_text())["state"] == "diverged"
    assert len(_metrics(folder)) == 1


def test_runs_started_at_once_never_share_a_folder(tmp_path, npz_data):
    made, errors = [], []

    def make():
        try:
            made.append(create_unique_dir(tmp_path / "out"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 32
    procs = [_cnnlab("run", "basenet", "--data", npz_data, "--epochs", 1, "--seeds", 1, "--device", "cpu", "--out",
                     tmp_path / "same", "--no-progress") for _ in range(2)]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    groups = list((tmp_path / "same" / "basenet").iterdir())
    assert len(groups) == 2 and all((g / "summary.json").is_file() for g in groups)


# ----------------------------------------------------------------------------- bad input


def _lab_birds(root: Path, train_lines: list[str], test_lines: list[str] | None = None) -> Path:
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "test.txt").write_text("\n".join(test_lines or train_lines) + "\n")
    return root


@pytest.mark.parametrize("line, fragment", [
    ("001.Black_footed_Albatross/missing.jpg", "train.txt:2: image '001.Black_footed_Albatross/missing.jpg' does not exist"),
    ("../outside/x.jpg", "train.txt:2: '../outside/x.jpg' points outside the dataset folder"),
    ("/etc/passwd", "train.txt:2: '/etc/passwd' is an absolute path"),
    ("lonely.jpg", "train.txt:2: expected CLASS_FOLDER/IMAGE"),
    ("001.Black_footed_Albatross/a\tb.jpg", "train.txt:2: control characters"),
])
def test_bad_list_file_lines_are_named_with_their_line(birds_lab, line, fragment):
    good = (birds_lab / "train.txt").read_text().splitlines()[0]
    _lab_birds(birds_lab, [good, line])
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        load_splits(DataConfig(path=str(birds_lab), workers=0))


def test_symlink_escaping_the_dataset_is_refused(birds_lab, tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (birds_lab / BIRD_CLASSES[0] / "link.jpg").symlink_to(outside)
    _lab_birds(birds_lab, [f"{BIRD_CLASSES[0]}/link.jpg"])
    with pytest.raises(DataError, match="points outside the dataset folder"):
        load_splits(DataConfig(path=str(birds_lab), workers=0))


def test_test_classes_unknown_to_train_are_named(birds_lab):
    lines = (birds_lab / "train.txt").read_text().splitlines()
    _lab_birds(birds_lab, [l for l in lines if not l.startswith(BIRD_CLASSES[2])], lines)
    with pytest.raises(DataError, match=f"test.txt:9: class '{BIRD_CLASSES[2]}' is not in the train list"):
        load_splits(DataConfig(path=str(birds_lab), workers=0))


def test_corrupt_and_truncated_images_are_named_or_skipped(birds_lab):
    files = sorted((birds_lab / BIRD_CLASSES[1]).iterdir())
    files[0].write_bytes(b"not an image at all")
    files[1].write_bytes(files[1].read_bytes()[:200])  # truncated JPEG
    splits = load_splits(DataConfig(path=str(birds_lab), workers=0, image_size=32, val_fraction=0))
    with pytest.raises(DataError, match=f"{files[0].name}: cannot decode image"):
        for _ in splits.train.batches(4):
            pass
    lines = []
    splits = load_splits(DataConfig(path=str(birds_lab), workers=0, image_size=32, val_fraction=0,
                                    skip_bad_images=True), log=lines.append)
    assert len(splits.train) == 10
    assert any("skipping 2 bad train image(s)" in l and files[0].name in l and files[1].name in l for l in lines)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_unusual_image_modes_are_converted_not_crashed_on(birds_lab, mode):
    target = sorted((birds_lab / BIRD_CLASSES[0]).iterdir())[0]
    array = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    if mode == "I;16":
        from PIL import Image
        Image.fromarray((array[..., 0].astype(np.uint16) * 200)).save(target.with_suffix(".png"))
    else:
        target.with_suffix(".png").write_bytes(png_bytes(array, mode) if mode != "CMYK" else b"")
        if mode == "CMYK":
            from PIL import Image
            Image.fromarray(array).convert("CMYK").save(target.with_suffix(".tif"))
    name = target.with_suffix(".tif" if mode == "CMYK" else ".png").name
    _lab_birds(birds_lab, [f"{BIRD_CLASSES[0]}/{name}", f"{BIRD_CLASSES[1]}/" +
                           sorted((birds_lab / BIRD_CLASSES[1]).iterdir())[0].name])
    splits = load_splits(DataConfig(path=str(birds_lab), workers=0, image_size=16, val_fraction=0))
    images, _ = next(splits.train.batches(2))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8


@pytest.mark.parametrize("arrays, fragment", [
    ({"images": np.zeros((4, 8, 8, 3), np.uint8)}, r"missing key\(s\) labels"),
    ({"images": np.zeros((4, 8, 8, 3), np.int16), "labels": np.zeros(4, int)}, "must be uint8"),
    ({"images": np.zeros((4, 8, 8, 5), np.uint8), "labels": np.zeros(4, int)}, r"\(N, H, W, 3\)"),
    ({"images": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.zeros(3, int)}, r"labels must have shape \(4,\)"),
    ({"images": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.array([0, 1, 2, 9]),
      "class_names": np.array(["a", "b", "c"])}, r"labels must lie in 0..2, found 0..9"),
    ({"images": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.zeros(4, np.float32)}, "labels must be integers"),
])
def test_bad_npz_contents_are_explained(tmp_path, arrays, fragment):
    np.savez(tmp_path / "train.npz", **arrays)
    np.savez(tmp_path / "test.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(DataError, match=fragment):
        load_splits(DataConfig(path=str(tmp_path)))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "train.npz", images=np.array([object()], dtype=object), labels=np.zeros(1, int))
    np.savez(tmp_path / "test.npz", images=np.zeros((1, 8, 8, 3), np.uint8), labels=np.zeros(1, int))
    with pytest.raises(DataError, match="train.npz: not a readable .npz file"):
        load_splits(DataConfig(path=str(tmp_path)))


def test_checkpoint_from_another_model_is_refused(npz_data, tmp_path):
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 1, "device": "cpu",
                                                "out": str(tmp_path)})
    group = run_experiment(cfg, progress=False, log=lambda s: None)
    other = load_experiment("basenet", overrides={"data.path": str(npz_data), "model": "basenet_wide",
                                                  "train.epochs": 2, "device": "cpu", "out": str(tmp_path / "o")})
    with pytest.raises(RunInterrupted):
        run_experiment(other, progress=False, log=interrupt_after(1))
    (target,) = (tmp_path / "o").glob("*/*/seed-1")
    (target / "checkpoint.pt").write_bytes((group / "seed-1" / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match="checkpoint is for model 'basenet', not 'basenet_wide'"):
        resume(target, progress=False, log=lambda s: None)
    # same model name, other shapes (e.g. other class count): named as well
    state = torch.load(target / "checkpoint.pt", weights_only=True)
    state["model_name"] = "basenet_wide"
    torch.save(state, target / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="weights do not fit model 'basenet_wide'"):
        resume(target, progress=False, log=lambda s: None)


def test_checkpoints_and_yaml_never_execute_code(tmp_path, npz_data):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "checkpoint.pt", "wb") as handle:
        pickle.dump({"format": 1, "x": Payload()}, handle)
    from cnnlab.training.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="not a loadable cnnlab checkpoint"):
        load_checkpoint(run_dir / "checkpoint.pt")
    assert not (tmp_path / "pwned").exists()
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"model: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    with pytest.raises(ConfigError, match="evil.yaml:1: not valid YAML"):
        load_experiment(evil)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("args, fragment", [
    (["run", "basenet", "--source", "npz", "--data", "."], "does not look like an 'npz' dataset"),
    (["run", "birdnet_v0", "--backbone", "vgg16"], "unknown backbone 'vgg16'; valid backbones"),
    (["run", "basenet", "--set", "train.phases=[{trainable: [neck]}]", "--data", "."],
     "trainable part 'neck' is not a module of this model; valid: all, backbone, head"),
    (["ablation", "nosuch"], "built-in ablations: basenet_pp"),
    (["compare", "birdnet_v0", "--set", "model_args.head=[dense:-3]"], "head layer 'dense:-3': value -3 out of range"),
    (["run", "nosuchmodel"], "key 'model': unknown model 'nosuchmodel'; valid models: basenet"),
    (["run", "basenet", "--device", "tpu"], "--device: key 'device': expected one of auto, cpu, cuda, mps"),
    (["run", "basenet", "--source", "zip"], "--source: key 'data.source': expected one of auto, csv, npz, cifar100-folder"),
])
def test_unknown_names_list_the_valid_ones(args, fragment, tmp_path, capsys):
    # In an empty working folder (conftest): a bad command must fail before it makes any folder or writes.
    from cnnlab.cli.main import main

    assert main(args) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert fragment in stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_policy_part_lists_the_valid_parts(npz_data, tmp_path):
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "device": "cpu", "out": str(tmp_path),
                                                "train.phases": [{"trainable": ["neck"]}]})
    with pytest.raises(ConfigError, match="trainable part 'neck' is not a module of this model; valid: all, backbone, head"):
        run_experiment(cfg, progress=False, log=lambda s: None)


def test_ctrl_c_while_the_last_files_are_written_leaves_an_unfinished_run(npz_data, tmp_path, monkeypatch):
    """results.json marks a finished run, so a run stopped while writing its last files must not keep one."""
    from cnnlab.training.run_folder import RunFolder

    real = RunFolder.interpretation
    calls = {"n": 0}

    def stopped_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RunFolder, "interpretation", stopped_once)
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 2, "seeds": [1],
                                                "device": "cpu", "out": str(tmp_path)})
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=lambda s: None)
    (folder,) = (tmp_path / "basenet").iterdir()
    run = folder / "seed-1"
    assert not (run / "results.json").exists()
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    resume(folder, progress=False, log=lambda s: None)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert (run / "results.json").is_file() and (run / "per_class.csv").is_file() and (folder / "summary.json").is_file()
