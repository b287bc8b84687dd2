"""The benchmarks' run records (benchmarks/_records.py): seeds trained in different folders join one
record of the same recipe, and a folder of another recipe is refused with the keys that differ."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cnnlab.config import load_experiment
from cnnlab.studies import run_experiment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _records import experiment_record, merge_records, precision  # noqa: E402


def _train(npz: Path, out: Path, seeds: list[int], **overrides) -> Path:
    cfg = load_experiment("basenet", overrides={"data.path": str(npz), "out": str(out), "seeds": seeds,
                                                "train.epochs": 1, "device": "cpu", "seeds_together": "off",
                                                **overrides})
    return run_experiment(cfg, progress=False, log=lambda line: None)


def test_seeds_of_one_recipe_in_two_folders_make_one_record_and_another_recipe_is_refused(npz_data, tmp_path):
    first = _train(npz_data, tmp_path / "a", [1, 2])
    second = _train(npz_data, tmp_path / "b", [2, 3], **{"train.amp": "off"})  # a speed key: same recipe
    _, earlier = experiment_record(first, extra=lambda seed_dir, results: {"where": seed_dir.name})
    _, later = experiment_record(second, extra=lambda seed_dir, results: {"where": seed_dir.name})
    assert [s["unit"] for s in earlier["seeds"]] == ["seed-1", "seed-2"] and earlier["seeds"][0]["where"] == "seed-1"

    joined = merge_records(earlier, later)
    assert [s["unit"] for s in joined["seeds"]] == ["seed-1", "seed-2", "seed-3"]
    by_unit = {s["unit"]: s for s in joined["seeds"]}
    assert by_unit["seed-2"]["folder"] == str(second.resolve())  # the seed given again replaces its entry
    assert by_unit["seed-1"]["folder"] == str(first.resolve())
    assert joined["folders"] == sorted([str(first.resolve()), str(second.resolve())])
    accs = [s["test_acc"] for s in joined["seeds"]]
    assert joined["mean_test_acc"] == pytest.approx(sum(accs) / 3)

    other = _train(npz_data, tmp_path / "c", [4], **{"train.epochs": 2})
    with pytest.raises(SystemExit, match=r"not the same recipe; they differ in train\.epochs \(1 vs 2\)"):
        merge_records(joined, experiment_record(other)[1])
    in_bf16 = experiment_record(_train(npz_data, tmp_path / "d", [4], **{"train.amp": "bf16"}))[1]
    assert precision(in_bf16) == "bf16" and precision(joined) == "fp32"
    with pytest.raises(SystemExit, match="the recorded runs are fp32, this folder's bf16"):
        merge_records(joined, in_bf16)
    assert precision({"seeds": [{"unit": "seed-1"}]}) == "fp32"  # a record of cnnlab 0.7 or before


def test_a_folder_without_finished_seeds_or_experiment_file_is_named(npz_data, tmp_path):
    with pytest.raises(SystemExit, match="not an experiment folder"):
        experiment_record(tmp_path)
    folder = _train(npz_data, tmp_path / "a", [1])
    (folder / "seed-1" / "results.json").unlink()
    with pytest.raises(SystemExit, match=r"no finished run yet \(seed-1 unfinished\)"):
        experiment_record(folder)
