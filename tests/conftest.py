"""Tiny datasets generated in the real on-disk formats; nothing here touches the network."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


# The cores this machine lets the suite use, before a pytest-xdist worker takes its share of them.
ALL_CORES = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()


def share_the_cores_among_workers() -> int:
    """Under pytest-xdist (`-n auto`) each worker, and every process it starts, runs on cores of its own: two
    workers each running 2 threads on 2 cores would spin against each other (a small model trains ~6× slower,
    not 2×). cnnlab reads the cores it may use from this affinity (training/device.cpu_cores), so a run inside a
    worker sizes its threads and its seed processes to the worker's share. Returns the threads to use."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return 2
    cores = sorted(ALL_CORES)
    index = int(worker.removeprefix("gw"))
    mine = set(cores[index::count]) or {cores[index % len(cores)]}  # more workers than cores: they share
    os.sched_setaffinity(0, mine)
    return len(mine)


torch.set_num_threads(min(2, share_the_cores_among_workers()))


@pytest.fixture(autouse=True)
def work_in_a_temporary_folder(tmp_path, monkeypatch):
    """Tests write only under temporary folders: a stray default `runs/` lands in tmp_path."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Feature and split caches of a test live in its own folder (inherited by the CLI it starts),
    never in the user's ~/.cache."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cnnlab-cache"))


@pytest.fixture(autouse=True)
def no_weight_downloads(monkeypatch, tmp_path):
    """Tests never touch the network: any attempt to fetch weights fails loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    # The one function every weight download goes through (torch.hub.load_state_dict_from_url calls
    # it, however torchvision imported that): patching only it keeps the real path to it under test.
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    # timm's weights come through huggingface_hub: offline, and from a cache of the test's own (empty)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))


@pytest.fixture(autouse=True)
def fp32_on_every_cpu(monkeypatch):
    """`train.amp: auto` stays fp32 on a CPU with native bf16 (AVX512-BF16, AMX) too, in this process and
    in the seed processes it spawns, so the tests that recompute a run's figures in fp32 check the same
    numbers on every machine; bf16 is tested by name (`train.amp: bf16`, test_engine's detection)."""
    monkeypatch.setenv("CNNLAB_CPU_BF16", "0")


@pytest.fixture(autouse=True)
def torch_is_the_default_engine(monkeypatch):
    """`--engine auto` means PyTorch in the tests (as on a machine without cnnlab[fast]), so the figures
    the tests recompute with PyTorch match; OpenVINO and ONNX Runtime are tested by name (test_engines.py)."""
    monkeypatch.setenv("CNNLAB_ENGINE", "torch")


@pytest.fixture
def every_core():
    """The test, and what it starts, may use every core of the machine, as a user's command would (a run's
    choices, such as training seeds together, depend on the cores it sees), however pytest-xdist shared them."""
    if not ALL_CORES:
        yield
        return
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, ALL_CORES)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


# The longest tests start first, so that pytest-xdist's workers finish together instead of one waiting on a
# long test collected last (each ≥ 30 s alone on 2 cores).
LONGEST_FIRST = ("test_tutorials.py::test_a_tutorial_runs", "test_faults.py::test_five_kills",
                 "test_engines.py::test_engine_cases", "test_seeds_together.py::test_an_interrupted",
                 "test_tune.py::test_a_tune_killed", "test_distributed.py::", "test_gpu_suite.py::",
                 "test_report.py::test_experiment_report_numbers", "test_ablation.py::test_tiny_ablation")


def pytest_collection_modifyitems(config, items):
    rank = {id(item): next((i for i, key in enumerate(LONGEST_FIRST) if key in item.nodeid), len(LONGEST_FIRST))
            for item in items}
    items.sort(key=lambda item: rank[id(item)])  # stable: the others keep their order


@pytest.fixture(autouse=True)
def seeds_one_after_another(monkeypatch):
    """`--seeds-together auto` trains the seeds one after another in the test's process: a seed process
    imports torch anew (~3 s on 2 cores), and the suite trains several seeds in a hundred places. Training
    together is tested where a test names it (`--seeds-together on`, test_seeds_together.py), and auto's
    rule through `studies.parallel.wins`."""
    monkeypatch.setenv("CNNLAB_SEEDS_TOGETHER", "off")


def interrupt_after(epoch: int):
    """A log function that presses Ctrl-C as the line of `epoch` is printed (after its checkpoint)."""
    def log(line: str) -> None:
        if line.startswith(f"epoch {epoch:>3}/"):
            raise KeyboardInterrupt
    return log


def make_easy_images(num_classes: int, per_class: int, size: int = 32, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """An easy task: each class is a bright square at its own place, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(num_classes * per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes), per_class)
    cell = size // 4
    for i, label in enumerate(labels):
        r, c = divmod(int(label) % 16, 4)
        images[i, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell, label % 3] = 230
    order = rng.permutation(len(labels))
    return images[order], labels[order].astype(np.int64)


def write_easy_npz(folder: Path, *, train_per_class: int = 40, test_per_class: int = 10) -> Path:
    """train.npz and test.npz of a 4-class easy task in `folder`."""
    folder.mkdir(parents=True)
    names = np.array([f"class{i}" for i in range(4)])
    for split, per_class, seed in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        images, labels = make_easy_images(4, per_class, seed=seed)
        np.savez(folder / f"{split}.npz", images=images, labels=labels, class_names=names)
    return folder


@pytest.fixture
def npz_data(tmp_path: Path) -> Path:
    return write_easy_npz(tmp_path / "npz")


def _cifar_pickles(folder: Path, per_class: int = 3) -> None:
    """The official cifar-100-python layout: pickled dicts, rows of three 32×32 planes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(100), per_class)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        batch = {"filenames": [f"{i}.png" for i in range(len(labels))], "batch_label": split,
                 "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": data}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.fixture
def cifar_folder(tmp_path: Path) -> Path:
    root = tmp_path / "cifar"
    _cifar_pickles(root / "cifar-100-python")
    return root


@pytest.fixture
def cifar_archive(tmp_path: Path) -> Path:
    """A tiny cifar-100-python.tar.gz laid out like the official download."""
    staging = tmp_path / "staging"
    _cifar_pickles(staging / "cifar-100-python")
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "cifar-100-python", arcname="cifar-100-python")
    return archive


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for split, per_class, seed in (("train", 12, 0), ("test", 4, 1)):
        images, labels = make_easy_images(3, per_class, seed=seed)
        for i, (img, label) in enumerate(zip(images, labels)):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    return root


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


BIRD_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def _bird_jpeg(path: Path, label: int, index: int) -> None:
    rng = np.random.default_rng(label * 100 + index)
    array = rng.integers(0, 80, size=(40, 48, 3), dtype=np.uint8)
    array[:, :, label] = 200  # each class has its own dominant colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG")


def _bird_files(image_root: Path, per_class=(4, 2)) -> tuple[list[str], list[str]]:
    train, test = [], []
    for label, name in enumerate(BIRD_CLASSES):
        for i in range(sum(per_class)):
            rel = f"{name}/{name.split('.')[1]}_{i:04d}.jpg"
            _bird_jpeg(image_root / rel, label, i)
            (train if i < per_class[0] else test).append(rel)
    return train, test


@pytest.fixture
def birds_lab(tmp_path: Path) -> Path:
    """The lab's layout: class folders beside train.txt and test.txt."""
    root = tmp_path / "birds_lab"
    train, test = _bird_files(root)
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture
def birds_2010(tmp_path: Path) -> Path:
    """CUB-200 (2010) as distributed: images/ and lists/{train,test}.txt."""
    root = tmp_path / "CUB200"
    train, test = _bird_files(root / "images")
    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "lists" / "test.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture
def birds_2011(tmp_path: Path) -> Path:
    """CUB-200-2011 as distributed: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt."""
    root = tmp_path / "CUB_200_2011"
    train, test = _bird_files(root / "images")
    lines, labels, split = [], [], []
    for image_id, rel in enumerate(train + test, start=1):
        lines.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {BIRD_CLASSES.index(rel.split('/')[0]) + 1}")
        split.append(f"{image_id} {1 if rel in train else 0}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{i} {n}" for i, n in enumerate(BIRD_CLASSES, start=1)) + "\n")
    return root


def chromium() -> str | None:
    """Debian's Chromium, where the suite looks for it (CI installs it: .ci/run)."""
    for name in ("chromium", "chromium-browser"):
        for folder in ("/usr/bin", "/usr/local/bin"):
            if Path(folder, name).exists():
                return str(Path(folder, name))
    return None


def headless_browser(profile: Path, *, window: str):
    """A Selenium-driven headless Chromium kept off the network's background services; skipped where there is
    no Chromium, a failure in CI (which must have it)."""
    import os

    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver_path = chromium(), "/usr/bin/chromedriver"
    if binary is None or not Path(driver_path).exists():
        if os.environ.get("CI"):
            raise AssertionError("CI must install chromium and chromium-driver (.ci/run does)")
        pytest.skip("no chromium / chromedriver here (apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--allow-file-access-from-files", f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


MULTILABEL_CLASSES = ("bird", "feeder", "squirrel", "cat")


def make_multilabel_images(count: int, *, size: int = 32, seed: int = 0, noise: float = 0.04
                           ) -> tuple[np.ndarray, np.ndarray]:
    """A learnable multi-label task: class c present → a bright square in quadrant c; each image holds 0 to 4 of
    the four classes (about one in eight none), and a share `noise` of the labels is flipped (so no figure is
    trivially perfect). Returns uint8 images (N, H, W, 3) and the 0/1 labels (N, 4), flips included."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(count, size, size, 3), dtype=np.uint8)
    drawn = (rng.random((count, len(MULTILABEL_CLASSES))) < [0.5, 0.4, 0.3, 0.25]).astype(np.uint8)
    half = size // 2
    for i in range(count):
        for c in np.flatnonzero(drawn[i]):
            r, q = divmod(int(c), 2)
            images[i, r * half + 2:(r + 1) * half - 2, q * half + 2:(q + 1) * half - 2, c % 3] = 230
    flips = rng.random(drawn.shape) < noise
    return images, np.where(flips, 1 - drawn, drawn).astype(np.uint8)


def write_multilabel_csv(folder: Path, *, count: int = 120, layout: str = "separator", separator: str = ";",
                         seed: int = 0) -> Path:
    """PNG files and a CSV of a multi-label task in `folder`: `separator` (path,labels with bird;feeder cells)
    or `columns` (path,bird,feeder,squirrel,cat with 0/1 cells). Returns the CSV's path."""
    folder.mkdir(parents=True, exist_ok=True)
    images, targets = make_multilabel_images(count, seed=seed)
    rows = []
    for i, (image, row) in enumerate(zip(images, targets)):
        name = f"img{i:04d}.png"
        Image.fromarray(image).save(folder / name)
        if layout == "separator":
            rows.append(f"{name},{separator.join(MULTILABEL_CLASSES[c] for c in np.flatnonzero(row))}")
        else:
            rows.append(f"{name},{','.join(str(int(v)) for v in row)}")
    header = "path,labels" if layout == "separator" else "path," + ",".join(MULTILABEL_CLASSES)
    path = folder / "labels.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path
