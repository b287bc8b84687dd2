"""Property-based: no input makes the list-file or experiment-file parsers fail with anything
but cnnlab's own error, and accepted list entries always stay inside the dataset folder."""
from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.studies.ablation import parse_ablation
from cnnlab.config import (ExperimentConfig, config_to_dict, list_builtin_experiments, load_experiment,
                           parse_experiment, save_config)
from cnnlab.data.listfile import parse_id_table, parse_image_list
from cnnlab.errors import CnnlabError

ROOT = Path(tempfile.mkdtemp(prefix="cnnlab-prop-"))
(ROOT / "data" / "001.A").mkdir(parents=True)
(ROOT / "data" / "001.A" / "x.jpg").write_bytes(b"jpg")
(ROOT / "outside.jpg").write_bytes(b"jpg")

path_parts = st.sampled_from(["001.A", "x.jpg", "..", ".", "", "/", "\\", "~", "C:", "002.B", "y.png", "\x00",
                              "\t", " ", "é", "../outside.jpg", "#", "001.A/x.jpg"])
lines = st.one_of(st.text(max_size=40), st.lists(path_parts, max_size=6).map("/".join),
                  st.lists(path_parts, max_size=6).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(lines, max_size=8), st.booleans(), st.binary(max_size=20))
def test_list_file_parser_only_raises_its_own_error(content, with_ids, junk):
    list_file = ROOT / "list.txt"
    text = "\n".join(content)
    list_file.write_bytes(text.encode("utf-8", "surrogatepass") if with_ids else text.encode("utf-8", "replace"))
    if junk and with_ids:
        list_file.write_bytes(junk)
    try:
        entries = parse_image_list(list_file, ROOT / "data", with_ids=with_ids)
    except CnnlabError:
        return
    except UnicodeEncodeError:
        return  # the test could not even write such a file
    for item in entries:
        entry = item[1] if with_ids else item
        assert (ROOT / "data").resolve() in entry.path.parents
        assert entry.path.is_file()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_id_tables_only_raise_their_own_error(text):
    table = ROOT / "table.txt"
    table.write_text(text, encoding="utf-8", errors="replace")
    try:
        parse_id_table(table, columns=2, what="'ID VALUE'")
    except CnnlabError:
        pass


keys = st.sampled_from(["model", "model_args", "init", "name", "data", "preprocess", "train", "seeds", "device",
                        "out", "epochs", "lr", "optimizer", "phases", "augment", "normalize", "path", "source",
                        "trainable", "batch_size", "betas", "bogus", "val_fraction", "amp"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=10))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.one_of(values, st.dictionaries(keys, values, max_size=6)))
def test_experiment_parser_returns_a_config_or_its_own_error(data):
    try:
        cfg = parse_experiment(data)
    except CnnlabError:
        return
    assert isinstance(cfg, ExperimentConfig)


@settings(max_examples=200, deadline=None)
@given(st.text(string.printable, max_size=120))
def test_experiment_yaml_text_never_crashes_the_loader(text):
    path = ROOT / "exp.yaml"
    path.write_text(text)
    from cnnlab.config import load_experiment

    try:
        load_experiment(path)
    except CnnlabError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.one_of(values, st.dictionaries(st.sampled_from(["name", "base", "steps", "seeds", "alpha", "x"]), values,
                                         max_size=5)))
def test_ablation_parser_returns_a_config_or_its_own_error(data):
    try:
        parse_ablation(data)
    except CnnlabError:
        pass


@pytest.mark.parametrize("preset", list_builtin_experiments())
def test_every_preset_survives_a_yaml_round_trip(preset, tmp_path):
    """load → save_config → load gives the same configuration, as resume relies on."""
    cfg = load_experiment(preset)
    save_config(cfg, tmp_path / "again.yaml")
    again = load_experiment(tmp_path / "again.yaml")
    assert again == cfg and config_to_dict(again) == config_to_dict(cfg)


@settings(max_examples=200, deadline=None)
@given(st.one_of(values, st.dictionaries(keys, values, max_size=6)))
def test_any_accepted_config_survives_a_yaml_round_trip(data):
    try:
        cfg = parse_experiment(data)
    except CnnlabError:
        return
    again = parse_experiment(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    assert again == cfg
