"""Data sources: the one registry (detection, `cnnlab list`, the configuration read the same table; a
source added in this file alone works), and Hugging Face datasets written by the `datasets` library
itself: save_to_disk folders, Parquet files, a Hub cache read offline by name."""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from cnnlab.config import load_experiment
from cnnlab.data import load_splits
from cnnlab.data.sources import detect_source, sources
from cnnlab.datasources import BUILTIN_SOURCES, DataSource, register_source, source_names, unregister_source
from cnnlab.errors import ConfigError, DataError
from cnnlab.studies import run_experiment
from conftest import make_easy_images

datasets = pytest.importorskip("datasets")

CLASSES = ["cat", "dog", "owl", "fox"]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_table(per_class: int, seed: int, *, label_kind: str = "classlabel", extra_image: bool = False):
    """A `datasets.Dataset` of PNG images (the Image feature) and labels, as Dataset.from_dict + cast_column make it."""
    images, labels = make_easy_images(4, per_class, seed=seed)
    data = {"image": [png(x) for x in images], "label": labels.tolist()}
    if label_kind == "strings":
        data["label"] = [CLASSES[i] for i in labels]
    if extra_image:
        data["thumbnail"] = list(data["image"])
    table = datasets.Dataset.from_dict({k: v if k == "label" else [{"bytes": b, "path": None} for b in v]
                                        for k, v in data.items()})
    table = table.cast_column("image", datasets.Image())
    if extra_image:
        table = table.cast_column("thumbnail", datasets.Image())
    if label_kind == "classlabel":
        table = table.cast_column("label", datasets.ClassLabel(names=CLASSES))
    return table


def hf_cfg(data: str, tmp_path: Path, **overrides):
    return load_experiment("basenet", overrides={"data.path": data, "train.epochs": 1, "train.batch_size": 16,
                                                 "seeds": [1], "device": "cpu", "data.workers": 0,
                                                 "out": str(tmp_path / "runs"), **overrides})


# ------------------------------------------------------------------ the registry

def test_every_registered_source_is_accepted_listed_and_detected_alike(tmp_path, capsys):
    from cnnlab.cli.main import main

    table = sources()
    assert source_names() == ("auto", *table)
    from cnnlab.data.sources import builtin_sources

    # the configuration's names (read without the data package) are the modules' sources, in detection order
    assert set(BUILTIN_SOURCES) == set(builtin_sources())
    assert BUILTIN_SOURCES == tuple(name for name in table if name in BUILTIN_SOURCES)
    assert main(["list", "sources"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == list(source_names())  # cnnlab list shows the table, in detection order
    for name in table:
        assert load_experiment("basenet", overrides={"data.source": name}).data.source == name
    with pytest.raises(ConfigError, match="expected one of auto, csv"):
        load_experiment("basenet", overrides={"data.source": "nosuch"})
    detected = [s.order for s in table.values() if s.detect is not None]
    assert detected == sorted(detected)  # the order auto tries them in is the table's
    # the table holds every source the package defines: one module each in cnnlab/data/sources/
    modules = {p.stem for p in (Path(__file__).parents[1] / "src/cnnlab/data/sources").glob("*.py")} - {"__init__"}
    assert modules == {"cifar", "npz", "imagefolder", "classfolder", "csv_file", "cub", "huggingface"}


def test_a_source_added_in_a_test_file_alone_works(tmp_path, capsys):
    """A new layout: a folder with `pixels.npy` (N×H×W×3) and `classes.txt` (one class name a line per image)."""
    from cnnlab.cli.main import main
    from cnnlab.data.images import DataSplits, ImageSet

    def detect(path: Path) -> bool:
        return (path / "pixels.npy").is_file() and (path / "classes.txt").is_file()

    def read(request):
        pixels = torch.from_numpy(np.load(request.path / "pixels.npy")).permute(0, 3, 1, 2).contiguous()
        names = (request.path / "classes.txt").read_text().split()
        classes = sorted(set(names))
        labels = torch.tensor([classes.index(n) for n in names])
        half = len(labels) // 2
        return DataSplits(train=ImageSet(pixels[:half], labels[:half]), val=None,
                          test=ImageSet(pixels[half:], labels[half:]), class_names=classes,
                          description=f"pixels in {request.path}")

    images, labels = make_easy_images(4, 30)
    folder = tmp_path / "pixels"
    folder.mkdir()
    np.save(folder / "pixels.npy", images)
    (folder / "classes.txt").write_text("\n".join(CLASSES[i] for i in labels))
    register_source(DataSource("pixels-npy", "pixels.npy + classes.txt (a test's own layout)", read=read,
                               detect=detect, order=5))
    try:
        assert detect_source(folder) == "pixels-npy"
        assert main(["list", "sources"]) == 0 and "pixels-npy" in capsys.readouterr().out
        for source in ("auto", "pixels-npy"):
            run = run_experiment(hf_cfg(str(folder), tmp_path, **{"data.source": source}), progress=False,
                                 log=lambda s: None)
            results = json.loads((run / "seed-1" / "results.json").read_text())
            assert results["num_test"] == 60 and results["num_train"] + results["num_val"] == 60
            # the source that read the data is recorded, as detected for `auto`: a resume reads it the same way
            assert load_experiment(run / "experiment.yaml").data.source == "pixels-npy"
    finally:
        unregister_source("pixels-npy")
    assert "pixels-npy" not in source_names()


# ------------------------------------------------------------------ Hugging Face datasets

def test_a_saved_dataset_dict_trains_with_its_own_splits_and_class_names(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": image_table(30, 0), "test": image_table(8, 1)}).save_to_disk(str(saved))
    cfg = hf_cfg(str(saved), tmp_path, **{"train.epochs": 3})
    splits = load_splits(cfg.data)
    assert splits.class_names == CLASSES and len(splits.test) == 32
    assert len(splits.train) + len(splits.val) == 120  # validation drawn from the dataset's train split
    assert "saved Hugging Face dataset" in splits.description and "'image'" in splits.description
    run = run_experiment(cfg, progress=False, log=lambda s: None)
    results = json.loads((run / "seed-1" / "results.json").read_text())
    assert results["num_test"] == 32 and results["test_acc"] > 0.5
    per_class = list(csv.DictReader((run / "seed-1" / "per_class.csv").read_text().splitlines()))
    assert [r["class"] for r in per_class] == CLASSES
    recorded = load_experiment(run / "experiment.yaml")
    assert recorded.data.source == "hf-disk" and recorded.data.num_classes == 4  # the detected source, recorded


def test_parquet_files_train_with_train_validation_and_test_from_their_names(tmp_path):
    folder = tmp_path / "tables" / "data"
    folder.mkdir(parents=True)
    for split, per_class, seed in (("train", 20, 0), ("validation", 5, 2), ("test", 6, 1)):
        image_table(per_class, seed, label_kind="strings").to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    cfg = hf_cfg(str(tmp_path / "tables"), tmp_path)
    splits = load_splits(cfg.data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 20, 24)
    assert splits.class_names == sorted(CLASSES)  # string labels: their sorted values
    run = run_experiment(cfg, progress=False, log=lambda s: None)
    assert json.loads((run / "seed-1" / "results.json").read_text())["num_val"] == 20


def test_one_parquet_file_without_splits_gets_cnnlabs_saved_split(tmp_path):
    file = tmp_path / "all.parquet"
    image_table(25, 0).to_parquet(str(file))
    run = run_experiment(hf_cfg(str(file), tmp_path), progress=False, log=lambda s: None)
    rows = list(csv.DictReader((run / "split.csv").read_text().splitlines()))
    assert len(rows) == 100 and {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(r["path"].startswith("train/") for r in rows)
    recorded = load_experiment(run / "experiment.yaml")
    again = load_splits(recorded.data)  # the saved split is read back: the same rows in each split
    assert again.split_rows == [{k: r[k] for k in ("path", "label", "split")} for r in rows]


def test_large_tables_stream_rows_instead_of_holding_images(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": image_table(10, 0), "test": image_table(4, 1)}).save_to_disk(str(saved))
    splits = load_splits(hf_cfg(str(saved), tmp_path, **{"data.cache": False}).data)
    from cnnlab.data.streaming import StreamingSet

    assert isinstance(splits.train, StreamingSet) and "held in memory" not in splits.description
    images, labels = next(iter(splits.test.batches(16)))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    cached = load_splits(hf_cfg(str(saved), tmp_path).data)  # small: decoded once into memory
    assert torch.equal(next(iter(cached.test.batches(16)))[0], images)


@pytest.mark.parametrize("case, fragment", [
    ("two images", "2 columns could be the images (image, thumbnail); name one with data.image_column"),
    ("no label", "no label column found (a ClassLabel column or one named label / labels); name it with "
                 "data.label_column; columns: image (Image), tag (Value string)"),
    ("wrong column", "data.image_column 'photo' is not a column; columns: image (Image), label (ClassLabel)"),
])
def test_a_missing_or_ambiguous_column_is_one_line_naming_the_columns(tmp_path, capsys, case, fragment):
    from cnnlab.cli.main import main

    table = image_table(5, 0, extra_image=case == "two images")
    if case == "no label":
        table = image_table(5, 0, label_kind="strings").rename_column("label", "tag")
    saved = tmp_path / "saved"
    table.save_to_disk(str(saved))
    extra = ["--set", "data.image_column=photo"] if case == "wrong column" else []
    os.chdir(tmp_path)
    assert main(["run", "basenet", "--data", str(saved), *extra]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def _fake_hub_cache(home: Path, tmp_path: Path) -> None:
    """What `load_dataset("owner/tiny")` leaves in the datasets cache after a first, online load: the prepared
    Arrow files under HF_DATASETS_CACHE/owner___tiny/default/0.0.0/<hash>/ (made here by the library's own
    Parquet builder from the repository's files, then placed where a Hub download would have put them)."""
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    image_table(12, 0).to_parquet(str(repo / "train-00000-of-00001.parquet"))
    image_table(4, 1).to_parquet(str(repo / "test-00000-of-00001.parquet"))
    build = tmp_path / "build"
    datasets.load_dataset("parquet", data_files={"train": str(repo / "train-00000-of-00001.parquet"),
                                                 "test": str(repo / "test-00000-of-00001.parquet")},
                          cache_dir=str(build))
    prepared = next(Path(p) for p in glob.glob(str(build / "parquet" / "*" / "*" / "*")) if Path(p).is_dir())
    target = home / "datasets" / "owner___tiny" / "default" / "0.0.0" / prepared.name
    shutil.copytree(prepared, target)
    for file in target.glob("parquet-*.arrow"):
        file.rename(target / file.name.replace("parquet-", "tiny-"))


def test_a_hub_dataset_loads_by_name_from_the_cache_offline_and_fails_in_one_line_without_it(tmp_path):
    home = tmp_path / "hf-home"
    _fake_hub_cache(home, tmp_path)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "CNNLAB_ENGINE": "torch",
           "CNNLAB_CPU_BF16": "0"}
    env.pop("HF_DATASETS_CACHE", None)
    command = [sys.executable, "-m", "cnnlab", "run", "basenet", "--epochs", "1", "--seeds", "1", "--device", "cpu",
               "--out", str(tmp_path / "runs")]
    done = subprocess.run([*command, "--data", "hf:owner/tiny"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(next((tmp_path / "runs").glob("basenet/*/seed-1/results.json")).read_text())
    assert results["num_test"] == 16 and results["num_train"] + results["num_val"] == 48
    missing = subprocess.run([*command, "--data", "hf:owner/not-cached"], capture_output=True, text=True, env=env,
                             timeout=300)
    assert missing.returncode == 2
    assert "hf:owner/not-cached: not in the local Hugging Face cache" in missing.stderr
    assert "HF_HUB_OFFLINE=1" in missing.stderr and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    bad = subprocess.run([*command, "--data", "hf:not a name"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "expected hf:OWNER/NAME" in bad.stderr
