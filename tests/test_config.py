"""Strict, typed experiment files: errors name the file, line and key."""
from __future__ import annotations

import pytest

from cnnlab.config import config_to_dict, load_experiment, parse_experiment
from cnnlab.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_builtin_basenet_preset_is_the_lab_recipe():
    cfg = load_experiment("basenet")
    assert cfg.model == "basenet" and cfg.init == "keras"
    assert cfg.train.epochs == 50 and cfg.train.batch_size == 64
    assert cfg.train.optimizer.name == "adam" and cfg.train.optimizer.eps == 1e-7
    assert cfg.seeds == [1, 2, 3] and cfg.data.val_fraction == 0.1


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "model: basenet\ntrain:\n  epochs: 3\n  optimzer:\n    lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    message = str(err.value)
    assert f"{path}:4" in message and "train.optimzer" in message and "optimizer" in message


@pytest.mark.parametrize("text, fragment", [
    ("train:\n  epochs: ten\n", "train.epochs': expected an integer"),
    ("train:\n  epochs: 0\n", "expected a value >= 1"),
    ("train:\n  optimizer:\n    lr: -1\n", "expected a value > 0.0"),
    ("train:\n  optimizer:\n    name: rmsprop\n", "expected one of adam, adamw, sgd"),
    ("seeds: 3\n", "expected a list of an integer"),
    ("seeds: [1, 1]\n", "distinct"),
    ("data:\n  val_fraction: 2\n", "<= 0.9"),
    ("train: [1, 2]\n", "expected a mapping"),
    ("- a\n- b\n", "mapping of keys at the top level"),
    ("train:\n  epochs: [1\n", "not valid YAML"),
    ("train:\n  channels_last: yes please\n", "expected true or false"),
    ("train:\n  amp: fp8\n", "expected one of auto, bf16, fp16, off"),
    ("train:\n  tta: yes\n", "expected one of off, flip, flip_shift, got True"),
])
def test_bad_values_are_rejected_with_the_key(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_experiment(write(tmp_path, text))


def test_overrides_are_validated_like_the_file():
    cfg = parse_experiment({"model": "basenet"}, overrides={"train.epochs": 2, "train.optimizer.lr": 0.01})
    assert cfg.train.epochs == 2 and cfg.train.optimizer.lr == 0.01
    with pytest.raises(ConfigError, match="train.batchsize"):
        parse_experiment({}, overrides={"train.batchsize": 3})


def test_resolved_config_round_trips():
    cfg = load_experiment("basenet", overrides={"seeds": [4]})
    assert parse_experiment(config_to_dict(cfg)) == cfg


def test_missing_experiment_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="built-in experiments: .*basenet"):
        load_experiment("no_such_preset")


def test_epochs_override_on_a_phased_policy_says_what_to_set_instead():
    with pytest.raises(ConfigError, match=r"trains in phases \(warm-up: 10, unfreeze-14x14: 10\); set train.phases.N"):
        load_experiment("birdnet_v4", overrides={"train.epochs": 3})
    cfg = load_experiment("birdnet_v4", overrides={"train.phases.1.epochs": 3})
    assert [p.epochs for p in cfg.train.phases] == [10, 3]
    with pytest.raises(ConfigError, match="'5' is not an index of the 2-item list"):
        load_experiment("birdnet_v4", overrides={"train.phases.5.epochs": 3})


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    """`cnnlab run basenet --out .` leaves a `basenet/` folder; the next `cnnlab run basenet` still works."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "basenet").mkdir()
    assert load_experiment("basenet").model == "basenet"
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="mine: is a folder, not an experiment file"):
        load_experiment("mine")


def test_unquoted_on_and_off_mean_the_choices_yaml_would_turn_into_booleans(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: basenet\nseeds_together: on\n")  # YAML 1.1: on → true
    assert load_experiment(str(path)).seeds_together == "on"
    assert load_experiment("basenet", overrides={"seeds_together": False}).seeds_together == "off"
    # Keys whose choices have "off" but no "on" (a typed `--set train.tta=off` arrives as False).
    path.write_text("model: basenet\ntrain: {tta: off, keep_best: off, amp: off}\n")
    cfg = load_experiment(str(path))
    assert (cfg.train.tta, cfg.train.keep_best, cfg.train.amp) == ("off", "off", "off")
    with pytest.raises(ConfigError, match="train.tta': expected one of off, flip"):
        load_experiment("basenet", overrides={"train.tta": True})  # `yes`/`on`: no such choice
