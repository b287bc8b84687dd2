"""Every field cnnlab reads from a file it did not just write is checked (issue "The first hour": the files a
user hands us). A table walks every field of each file kind — the record in model.safetensors and in an
exported graph, a run's results.json, an experiment's summary.json, a study's study.json, a Hub folder's
config.json — and mutates it: each mutation is either a value the field accepts or one CnnlabError naming the
file and the field. Never a KeyError, a TypeError, a MemoryError or a silent run."""
from __future__ import annotations

import copy
import json

import pytest

from cnnlab.errors import CheckpointError, CnnlabError, RunError

MUTATIONS = [None, [], {}, [1, 2], "text", "", -1, 0, 3, 100_000, 1e308, -0.5, True, {"a": 1}, ["a", "b", "c"]]


def _walk(schema: dict, good: dict, read, source: str) -> None:
    """Every field of `schema` in `good`, set to every mutation (and removed): accepted, or one error naming it."""
    for field in schema:
        refused = 0
        for value in [*MUTATIONS, "<absent>"]:
            record = copy.deepcopy(good)
            if value == "<absent>":
                record.pop(field, None)
            else:
                record[field] = value
            try:
                read(record)
            except CnnlabError as exc:
                message = str(exc)
                assert source in message and f"'{field}'" in message, (field, value, message)
                assert "\n" not in message
                refused += 1
            except Exception as exc:  # noqa: BLE001 — the point: nothing but a CnnlabError escapes
                raise AssertionError(f"field {field!r} = {value!r}: {type(exc).__name__}: {exc}") from exc
        assert refused, f"field {field!r}: no mutation was refused: it is not checked"


def test_the_record_of_trained_weights_and_exported_graphs(tmp_path):
    from cnnlab.inference.record import RECORD_SCHEMA, check_record

    good = {"model": "basenet", "model_args": {}, "class_names": ["a", "b"], "input_size": [3, 32, 32],
            "resize": "stretch", "crop_ratio": 0.875, "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25], "tta": "off", "uint8_input": False, "experiment": "basenet", "seed": 1}
    _walk(RECORD_SCHEMA, good, lambda r: check_record(r, "model.safetensors"), "model.safetensors")
    for bad, field in (({**good, "std": [0.0, 0.2, 0.2]}, "std"), ({**good, "input_size": [3, 100_000, 100_000]},
                                                                   "input_size"),
                       ({**good, "input_size": [3, 32, 64]}, "input_size"), ({**good, "mean": [0.5]}, "mean")):
        with pytest.raises(CheckpointError, match=f"model.safetensors: field '{field}'"):
            check_record(bad, "model.safetensors")


def test_a_run_and_an_experiments_results(tmp_path):
    from cnnlab.studies.layout import RESULTS_SCHEMA, SUMMARY_SCHEMA, read_results, read_summary

    run = {"seed": 1, "test_acc": 0.5, "test_loss": 1.2, "epochs": 2, "epochs_trained": 2, "kept_epoch": 2,
           "num_train": 10, "num_val": 2, "num_test": 4, "wall_time_s": 1.0, "mean_epoch_time_s": 0.5,
           "device": "cpu", "final_val_acc": 0.5, "best_val_acc": 0.5, "test_bal_acc": 0.5, "test_macro_f1": 0.5,
           "median_epoch_time_s": 0.5, "one_off_time_s": 0.0, "phase_median_epoch_time_s": {"train": 0.5},
           "stopped_early": []}
    path = tmp_path / "results.json"

    def read(record):
        path.write_text(json.dumps(record))
        return read_results(path)

    _walk(RESULTS_SCHEMA, run, read, str(path))
    summary = {"experiment": "basenet", "runs": [run], "test_acc_mean": 0.5, "test_acc_std": 0.0,
               "test_loss_mean": 1.2, "test_loss_std": 0.0}
    spath = tmp_path / "summary.json"

    def read_s(record):
        spath.write_text(json.dumps(record))
        return read_summary(spath)

    _walk(SUMMARY_SCHEMA, summary, read_s, str(spath))
    with pytest.raises(RunError, match=r"summary.json: runs\[0\]: field 'test_acc'"):
        read_s({**summary, "runs": [{**run, "test_acc": "high"}]})
    path.write_text("[1, 2]")
    with pytest.raises(RunError, match="results.json: expected a run's results"):
        read_results(path)


def test_a_tuning_studys_record(tmp_path):
    from cnnlab.studies.tune import IDENTITY_SCHEMA, STUDY_SCHEMA, read_study_record

    identity = {"experiment": "basenet", "space_sha256": "ab" * 32, "overrides": {}, "seeds": [1],
                "monitor": "val_acc"}
    path = tmp_path / "study.json"

    def read(record):
        path.write_text(json.dumps(record))
        return read_study_record(path)

    _walk(STUDY_SCHEMA, {"identity": identity, "space": "a: {choices: [1, 2]}"}, read, str(path))
    _walk(IDENTITY_SCHEMA, identity, lambda i: read({"identity": i, "space": "x"}), str(path))
    path.write_text("{not json")
    with pytest.raises(RunError, match="study.json: not a readable study record"):
        read_study_record(path)


def test_a_hub_folders_config(tmp_path):
    pytest.importorskip("timm")
    from cnnlab.models.zoo_timm import PRETRAINED_CFG_SCHEMA, _path_preprocessing

    folder = tmp_path / "hub"
    folder.mkdir()
    cfg = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

    def read(stated):
        (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "pretrained_cfg": stated}))
        return _path_preprocessing(folder)

    _walk(PRETRAINED_CFG_SCHEMA, cfg, read, "config.json")
    assert read(cfg).size == 224
    (folder / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="config.json: expected a mapping"):
        _path_preprocessing(folder)


def test_names_inside_a_file_resolve_only_inside_its_folder(tmp_path):
    from cnnlab.fileio import inside, with_base

    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "secret.pt").write_bytes(b"x")
    for name in ("../secret.pt", str(tmp_path / "secret.pt"), 3, ["a"]):
        with pytest.raises(CheckpointError, match="base_file"):
            with_base({"base_file": name, "model": {}}, run / "checkpoint.pt")
    (run / "link.pt").symlink_to(tmp_path / "secret.pt")
    with pytest.raises(CheckpointError, match="'link.pt' points outside its folder"):
        inside(run, "link.pt", source=run / "checkpoint.pt", field="base_file")
    assert inside(run, "checkpoint-phase0-start.pt", source="x", field="base_file") == run / "checkpoint-phase0-start.pt"


@pytest.mark.parametrize("address", ["hf:../x", "hf:/etc", "hf:..", "hf:.hidden/x", "hf:a/../../b"])
def test_hf_addresses_name_hub_datasets_never_local_paths(address):
    from cnnlab.data.hub import parse_address
    from cnnlab.errors import DataError

    with pytest.raises(DataError, match="a local folder is given as a path"):
        parse_address(address)


def test_a_damaged_weights_record_is_one_line_at_load(npz_data, tmp_path):
    from safetensors.torch import load_file, save_file

    from cnnlab.config import load_experiment
    from cnnlab.inference import load_trained
    from cnnlab.studies import run_experiment

    folder = run_experiment(load_experiment("basenet", overrides={
        "data.path": str(npz_data), "train.epochs": 1, "seeds": [1], "device": "cpu", "out": str(tmp_path / "r")}),
        progress=False, log=lambda s: None)
    weights = folder / "seed-1" / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    record = json.loads(metadata["cnnlab"])
    tensors = load_file(str(weights))
    for field, value in (("input_size", [3, 100_000, 100_000]), ("std", [0, 0, 0]), ("class_names", {"a": 1})):
        save_file(tensors, str(weights), metadata={**metadata, "cnnlab": json.dumps({**record, field: value})})
        with pytest.raises(CheckpointError, match=f"model.safetensors: field '{field}'"):
            load_trained(weights)
    results = folder / "seed-1" / "results.json"
    results.write_text(json.dumps({**json.loads(results.read_text()), "test_acc": "97 %"}))
    save_file(tensors, str(weights), metadata=metadata)
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cnnlab.inference.serve import create_app

    with TestClient(create_app(folder, engine="torch"), raise_server_exceptions=False) as client:
        answer = client.get("/v1/model")
    assert answer.status_code == 500 and answer.headers["content-type"].startswith("application/json")
    assert "results.json: field 'test_acc'" in answer.json()["error"]
