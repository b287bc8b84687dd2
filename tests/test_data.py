"""Each data source read from tiny generated files in its real format; splits; preprocessing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.config import DataConfig
from cnnlab.data import detect_source, iterate_batches, load_splits
from cnnlab.data import cifar as cifar_module
from cnnlab.data.images import ImageSet
from cnnlab.errors import DataError


def test_npz_source(npz_data):
    splits = load_splits(DataConfig(path=str(npz_data), val_fraction=0.25))
    assert splits.class_names == ["class0", "class1", "class2", "class3"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (120, 40, 40)
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (3, 32, 32)
    # stratified: every class equally represented in validation
    assert torch.bincount(splits.val.labels).tolist() == [10, 10, 10, 10]


def test_split_is_seeded_and_disjoint(npz_data):
    a = load_splits(DataConfig(path=str(npz_data), split_seed=0))
    b = load_splits(DataConfig(path=str(npz_data), split_seed=0))
    c = load_splits(DataConfig(path=str(npz_data), split_seed=1))
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    train_rows = {bytes(x.numpy()) for x in a.train.images}
    assert not any(bytes(x.numpy()) in train_rows for x in a.val.images)


def test_cifar_folder_keeps_the_first_fine_labels(cifar_folder):
    splits = load_splits(DataConfig(path=str(cifar_folder), num_classes=25, val_fraction=0))
    assert detect_source(cifar_folder) == "cifar100-folder"
    assert splits.class_names == [f"fine{i}" for i in range(25)]
    assert len(splits.train) == 75 and int(splits.train.labels.max()) == 24
    # the planes are R, G, B rows: pixel (0,0) of image 0 must be data[0, 0], data[0, 1024], data[0, 2048]
    raw = cifar_module._load_pickle(cifar_folder / "cifar-100-python" / "train")
    first = raw["data"][0]
    assert splits.train.images[0, :, 0, 0].tolist() == [first[0], first[1024], first[2048]]


def test_cifar_download_path_uses_torchvision_offline(tmp_path, cifar_archive, monkeypatch):
    """The real download code runs; only the network fetch is replaced by a local copy."""
    import torchvision.datasets.utils as tv_utils

    fetched = []

    def fake_download_url(url, root, filename=None, md5=None, **kwargs):
        fetched.append(url)
        shutil.copy(cifar_archive, Path(root) / filename)

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_DATA", str(cache))
    splits = load_splits(DataConfig(num_classes=25, val_fraction=0.2))
    assert fetched and fetched[0].endswith("cifar-100-python.tar.gz")
    assert (cache / "cifar-100-python" / "train").is_file()
    assert len(splits.train) + len(splits.val) == 75
    # a second load reads the cache and downloads nothing
    load_splits(DataConfig(num_classes=25))
    assert len(fetched) == 1


def test_cifar_without_network_says_how_to_provide_it(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(source="cifar100", path=str(tmp_path)))
    message = str(err.value)
    assert "could not be downloaded" in message and "--data PATH" in message and str(tmp_path) in message
    # the default cache, offline: the failed download leaves no empty ~/.cache/cnnlab/data behind
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(DataError, match="could not be downloaded"):
        load_splits(DataConfig())
    assert not (tmp_path / "xdg").exists()


def test_cifar_pickle_that_runs_code_is_refused(cifar_folder):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (cifar_folder / "cifar-100-python" / "meta").write_bytes(pickle.dumps({"fine_label_names": Evil()}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_splits(DataConfig(path=str(cifar_folder)))


def test_image_folder_source(image_folder):
    splits = load_splits(DataConfig(path=str(image_folder), val_fraction=0))
    assert detect_source(image_folder) == "imagefolder"
    assert splits.class_names == ["c0", "c1", "c2"]
    assert (len(splits.train), len(splits.test)) == (36, 12)
    assert splits.train.images.shape[1:] == (3, 32, 32)


def test_missing_and_unrecognised_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(DataConfig(path=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match="no dataset layout recognised"):
        load_splits(DataConfig(path=str(tmp_path)))


def test_npz_with_bad_contents_is_explained(tmp_path):
    np.savez(tmp_path / "train.npz", images=np.zeros((4, 8, 8, 3), np.float32), labels=np.zeros(4, np.int64))
    np.savez(tmp_path / "test.npz", pictures=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        load_splits(DataConfig(path=str(tmp_path)))
    np.savez(tmp_path / "train.npz", images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=r"test.npz: missing key\(s\) images, labels"):
        load_splits(DataConfig(path=str(tmp_path)))


def test_batches_cover_every_image_once_in_seeded_order():
    data = ImageSet(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).clone(),
                    torch.arange(10))
    seen = torch.cat([y for _, y in iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(1))])
    again = torch.cat([y for _, y in iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert sorted(seen.tolist()) == list(range(10)) and torch.equal(seen, again)
    assert [len(y) for _, y in iterate_batches(data, 4)] == [4, 4, 2]
