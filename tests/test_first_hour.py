"""The first hour of a new user, and the files they hand us (issue "The first hour"): YAML that lies, search
spaces that cannot be searched, passwords in URLs, commands that fail half-way."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.config import MAX_YAML_NODES, load_experiment, parse_yaml
from cnnlab.errors import ConfigError, mask_secrets

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))


@pytest.mark.parametrize("text, message", [
    ("model: basenet\ntrain:\n  epochs: 3\n  epochs: 5\n", r"exp.yaml:4: key 'epochs' appears twice in one mapping "
                                                          r"\(first on line 3\)"),
    ("model: basenet\nmodel: basenet_pp\n", r"exp.yaml:2: key 'model' appears twice"),
    (LAUGHS, rf"exp.yaml:\d+: expands to more than {MAX_YAML_NODES:,} values through its aliases"),
    ("a: &a [1, *a]\n", r"exp.yaml:1: a YAML alias refers to itself"),
])
def test_every_yaml_cnnlab_reads_refuses_duplicate_keys_and_alias_bombs(tmp_path, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)
    with pytest.raises(ConfigError, match=message.replace("exp.yaml", "space.yaml")):
        parse_yaml(text, "space.yaml")


def test_aliases_within_the_bound_still_work(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: basenet\nseeds: &s [1, 2]\nname: aliased\n")
    assert load_experiment(path).seeds == [1, 2]
    assert parse_yaml("a: &x {b: 1}\nc: *x\n", "t") == {"a": {"b": 1}, "c": {"b": 1}}


@pytest.mark.parametrize("spec, message", [
    ("{low: 0.0, high: 0.5, step: 0}", "step: expected a value > 0, got 0"),
    ("{low: 0.0, high: 0.5, step: -0.1}", "step: expected a value > 0"),
    ("{low: 0.0, high: 0.5, step: 0.3}", r"step 0.3 does not divide the range \[0.0, 0.5\] \(its last value would "
                                         r"be 0.3, not 0.5\)"),
    ("{low: 0.0, high: 0.2, step: 0.5}", r"step 0.5 is wider than the range \[0.0, 0.2\]"),
    ("{low: 0.1, high: 0.3}\ntrain.label_smoothing: {low: 0.0, high: 0.2}", "key 'train.label_smoothing' appears "
                                                                          "twice"),
])
def test_search_spaces_that_cannot_be_searched_are_refused_before_any_work(tmp_path, spec, message):
    from cnnlab.studies.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(f"train.label_smoothing: {spec}\n")
    with pytest.raises(ConfigError, match=message):
        load_space(path, "basenet")
    assert load_space(_write(tmp_path / "ok.yaml", "train.label_smoothing: {low: 0.0, high: 0.3, step: 0.1}\n"),
                      "basenet")[0].step == pytest.approx(0.1)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_passwords_in_urls_are_masked_everywhere_they_could_be_printed():
    assert mask_secrets("--storage postgresql://ann:hunter2@db.example:5432/studies: cannot open it") == \
        "--storage postgresql://ann:***@db.example:5432/studies: cannot open it"
    assert mask_secrets("mysql+pymysql://u:p%40ss@h/d and https://x:y@z") == "mysql+pymysql://u:***@h/d and https://x:***@z"
    assert mask_secrets("sqlite:////tmp/study.db and C:\\\\runs") == "sqlite:////tmp/study.db and C:\\\\runs"


def test_a_tune_that_fails_at_its_storage_leaves_no_folder_and_no_password(npz_data, tmp_path, capsys):
    pytest.importorskip("optuna")
    from cnnlab.cli.main import main

    space = _write(tmp_path / "my space.yaml", "train.label_smoothing: {choices: [0.0, 0.1]}\n")
    # nothing listens on port 9 of this machine: the storage cannot be opened
    url = "postgresql+psycopg://ann:hunter2@127.0.0.1:9/studies"
    code = main(["tune", "basenet", "--space", str(space), "--data", str(npz_data), "--epochs", "1",
                 "--storage", url, "--out", str(tmp_path / "runs"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 2 and "--storage postgresql+psycopg://ann:***@127.0.0.1:9/studies" in captured.err
    assert "hunter2" not in captured.err + captured.out
    assert not (tmp_path / "runs" / "tune").exists() or not any((tmp_path / "runs" / "tune").iterdir())


def test_a_space_file_whose_name_has_a_space_names_its_study(npz_data, tmp_path):
    pytest.importorskip("optuna")
    from cnnlab.studies.tune import TuneSettings, run_tune

    space = _write(tmp_path / "my space.yaml", "train.label_smoothing: {choices: [0.0, 0.1]}\n")
    folder = run_tune(TuneSettings(experiment="basenet", space=str(space), trials=1, skip_final=True,
                                   out=str(tmp_path / "runs"), overrides={"data.path": str(npz_data),
                                                                          "train.epochs": 1, "device": "cpu"}),
                      progress=False, log=lambda s: None)
    assert folder.name == "basenet-my-space" and (folder / "study.json").is_file()
    assert json.loads((folder / "study.json").read_text())["identity"]["experiment"] == "basenet"


def test_gradcam_images_are_spread_over_classes_and_over_right_and_wrong():
    import torch

    from cnnlab.inference.interpret import spread_over_classes

    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)  # a test split sorted by class
    predicted = labels.clone()
    predicted[[3, 12, 13]] = torch.tensor([1, 0, 2])  # one wrong in class 0, two in class 1, none in class 2
    chosen = spread_over_classes(labels, predicted, 8)
    assert len(chosen) == len(set(chosen)) == 8
    assert {int(labels[i]) for i in chosen} == {0, 1, 2}  # not 8 images of the first class
    assert chosen[:3] == [3, 12, 20]  # each class's wrong prediction first (class 2 has none: a right one)
    right = [int(labels[i] == predicted[i]) for i in chosen]
    assert 0 < sum(right) < 8
    assert sorted(spread_over_classes(labels, predicted, 100)) == list(range(30))  # asked for more: every image once


def test_a_relative_csv_path_trains_as_the_absolute_one_does(tmp_path, monkeypatch):
    """`--data labels.csv` typed relative to the current folder (a user's most common way to type a path)."""
    import numpy as np
    from PIL import Image

    from cnnlab.studies import run_experiment

    folder = tmp_path / "csvset"
    folder.mkdir()
    rows = ["path,label"]
    for i in range(24):
        Image.fromarray(np.full((32, 32, 3), 40 * (i % 3), np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,c{i % 3}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_experiment("basenet", overrides={"data.path": "csvset/labels.csv", "train.epochs": 1, "seeds": [1],
                                                "device": "cpu", "data.workers": 0, "out": "runs"})
    experiment = run_experiment(cfg, progress=False, log=lambda s: None)
    recorded = load_experiment(experiment / "experiment.yaml").data
    assert recorded.path == str(folder / "labels.csv") and recorded.source == "csv"  # absolute, detected source


def test_an_unknown_option_is_said_with_the_commands_own_usage(capsys):
    from cnnlab.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["predict", "run", "a.jpg", "--topk", "3"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("usage: cnnlab predict")
    assert "unrecognized arguments: --topk 3" in err
