"""Data-parallel training with torchrun: 2 CPU processes (gloo) match one process."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from cnnlab.data.batches import batch_indices


def test_shards_of_each_global_batch_cover_it_exactly():
    single = batch_indices(23, 8, shuffle=True, generator=torch.Generator().manual_seed(3))
    shards = [batch_indices(23, 8, shuffle=True, generator=torch.Generator().manual_seed(3), shard=(r, 3))
              for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # every process takes the same number of steps
    for step, whole in enumerate(single):
        parts = [s[step] for s in shards]
        assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())


def _rows(root):
    (path,) = root.glob("*/*/seed-1/metrics.csv")
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_processes_match_one(npz_data, tmp_path):
    common = ["run", "basenet", "--data", str(npz_data), "--epochs", "2", "--batch-size", "16", "--seeds", "1",
              "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "cnnlab", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "cnnlab", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr
    assert two.stdout.count("seed 1: test loss") == 1  # only process 0 prints
    assert len(list((tmp_path / "two").glob("*/*"))) == 1  # ... and makes one run folder
    for a, b in zip(_rows(tmp_path / "one"), _rows(tmp_path / "two")):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6)
    (results,) = (tmp_path / "two").glob("*/*/seed-1/results.json")
    assert json.loads(results.read_text())["processes"] == 2


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_with_cutmix_and_mixup_mixes_and_repeats_exactly(npz_data, tmp_path):
    """Mixing works under torchrun and repeats exactly. Each process mixes its own share of the
    global batch (partners from within the shard), so it does not equal one process's run, which
    pairs across the whole batch: the comparison is with a second identical 2-process run."""
    common = ["run", "basenet", "--data", str(npz_data), "--epochs", "2", "--batch-size", "16", "--seeds", "1",
              "--device", "cpu", "--no-progress", "--set", "train.cutmix=1.0", "--set", "train.mixup=0.4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "cnnlab", *common, "--out", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        rows.append(_rows(tmp_path / name))
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert len(rows[0]) == 2 and [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]]
    # a mixed image counts λ for its own label, so the training accuracy is not a whole count of images
    (results,) = (tmp_path / "a").glob("*/*/seed-1/results.json")
    seen = json.loads(results.read_text())["num_train"]
    assert any(abs(float(r["train_acc"]) * seen - round(float(r["train_acc"]) * seen)) > 1e-6 for r in rows[0])


def test_commands_that_are_not_distributed_refuse_torchrun():
    env = {**os.environ, "WORLD_SIZE": "2"}
    result = subprocess.run([sys.executable, "-m", "cnnlab", "ablation", "basenet_pp"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 2 and "only `cnnlab run` and `cnnlab resume` are distributed" in result.stderr


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_trains_a_multilabel_run_as_one_process_does(tmp_path):
    pytest.importorskip("iterstrat")
    from conftest import write_multilabel_csv

    data = write_multilabel_csv(tmp_path / "data", count=96)
    common = ["run", "basenet", "--data", str(data), "--epochs", "2", "--batch-size", "16", "--seeds", "1",
              "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launcher in (("two", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                    "2", "-m", "cnnlab"]), ("one", [sys.executable, "-m", "cnnlab"])):
        done = subprocess.run([*launcher, *common, "--out", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    for a, b in zip(_rows(tmp_path / "one"), _rows(tmp_path / "two")):
        for key in ("train_loss", "train_acc", "val_loss", "val_map", "val_micro_f1"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6)
    results = [json.loads(next((tmp_path / n).glob("*/*/seed-1/results.json")).read_text()) for n in ("one", "two")]
    assert results[1]["processes"] == 2 and results[1]["test_map"] == pytest.approx(results[0]["test_map"], abs=1e-5)
