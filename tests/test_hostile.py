"""Hostile inputs, each with a clean outcome — a run, or one line naming the culprit — never a traceback,
never a file of the user's changed: mutated image files of every format, decompression bombs, odd pixel
modes, names with markup, quotes and '$' everywhere a name is shown, symlinks, text files in the encodings
other tools write, and every command's options at and beyond their range."""
from __future__ import annotations

import csv
import hashlib
import io
import random
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli.main import main
from cnnlab.config import DataConfig
from cnnlab.data import load_splits
from cnnlab.data.imagefolder import load_rgb
from cnnlab.errors import DataError
from conftest import make_easy_images

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "TGA")


def _encoded(fmt: str) -> bytes:
    array = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_mutated_files_of_every_format_decode_or_are_named_in_one_line(tmp_path):
    """900 seeded mutations (bytes overwritten, files cut short) of 9 formats: each ends as an RGB image or a
    DataError naming the file; none raises anything else, and none lets a warning of Pillow's through."""
    rng = random.Random(28)
    originals = {fmt: _encoded(fmt) for fmt in FORMATS}
    outcomes = {"decoded": 0, "refused": 0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(900):
            fmt = FORMATS[i % len(FORMATS)]
            data = bytearray(originals[fmt])
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.3:
                data = data[: rng.randrange(1, len(data))]
            path = tmp_path / f"mutant-{i}.{fmt.lower()}"
            path.write_bytes(bytes(data))
            try:
                image = load_rgb(path)
            except DataError as exc:
                assert str(exc).startswith(str(path)) and "\n" not in str(exc)
                outcomes["refused"] += 1
            else:
                assert image.mode == "RGB"
                outcomes["decoded"] += 1
    assert not caught, [str(w.message) for w in caught[:3]]
    assert outcomes["refused"] > 100 and outcomes["decoded"] > 100  # both outcomes really exercised


def _png_declaring(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose header (CRC recomputed) claims width × height: a few bytes, a bomb's claim."""
    data = bytearray(_encoded("PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(data[ihdr:ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("width, height", [(60_000, 60_000), (20_000, 20_000), (2 ** 31 - 1, 2)])
def test_an_image_declaring_a_huge_size_is_refused_before_it_is_decoded(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(width, height))
    with pytest.raises(DataError, match=rf"^{path}: .*pixels is more than the 100,000,000 an image may have"):
        load_rgb(path)


@pytest.mark.parametrize("mode", ["1", "L", "I", "I;16", "F", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "HSV"])
def test_every_pixel_mode_becomes_rgb(tmp_path, mode):
    array = np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    image = Image.fromarray(array).convert("L" if mode in ("I", "I;16", "F", "1") else "RGB")
    image = image.convert(mode) if mode not in ("I;16",) else Image.fromarray(np.asarray(image, np.uint16) * 200)
    fmt = {"CMYK": "TIFF", "YCbCr": "JPEG", "HSV": "TIFF", "F": "TIFF", "I": "TIFF", "PA": "PNG"}.get(mode, "PNG")
    path = tmp_path / f"image.{fmt.lower()}"
    try:
        image.save(path, format=fmt)
    except (OSError, ValueError, KeyError):
        pytest.skip(f"this Pillow cannot write mode {mode} as {fmt}")
    decoded = load_rgb(path)
    assert decoded.mode == "RGB" and decoded.size == (10, 12)


# (a folder's name cannot hold '/', so no closing tags)
MARKUP = ['<b>bold<b> & "quoted"', "it's $\\frac{1}{0}$ US$ 5", "a|b <img src=x onerror=alert(1)>"]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def markup_folder(tmp_path: Path) -> Path:
    """A folder of class folders whose names carry markup, quotes, '$' and '|'."""
    root = tmp_path / "photos"
    images, labels = make_easy_images(3, 10, seed=3)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / MARKUP[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_names_with_markup_are_shown_as_written_everywhere(markup_folder, tmp_path, capsys):
    before = _hashes(markup_folder)
    code = main(["run", "basenet", "--data", str(markup_folder), "--epochs", "1", "--device", "cpu", "--seeds", "1",
                 "--out", str(tmp_path / "runs"), "--no-progress", "--set", "data.test_fraction=0.3"])
    assert code == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "runs" / "basenet").iterdir()
    seed = folder / "seed-1"
    with open(seed / "per_class.csv", newline="", encoding="utf-8") as handle:
        assert {row["class"] for row in csv.DictReader(handle)} == set(MARKUP)
    with open(seed / "test_predictions.csv", newline="", encoding="utf-8") as handle:
        assert {row["true"] for row in csv.DictReader(handle)} <= set(MARKUP)
    assert (seed / "confusion_matrix.png").stat().st_size > 0  # '$' drawn as written, not parsed as TeX
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in html and "<b>bold" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;bold&lt;b&gt; &amp; &quot;quoted&quot;" in html
    assert main(["report", str(folder), "--format", "md", "--out", str(tmp_path / "report.md")]) == 0
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "a\\|b" in markdown  # a '|' in a name does not split a table's cell
    assert _hashes(markup_folder) == before  # nothing of the user's changed


def test_symlinks_inside_the_dataset_are_followed_and_loops_end(tmp_path):
    root = tmp_path / "photos"
    images, labels = make_easy_images(2, 8, seed=4)
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"c{label}" / f"{i}.png")
    (root / "c0" / "again.png").symlink_to(sorted((root / "c0").iterdir())[0])  # a link to an image of the set
    (root / "c1" / "loop").symlink_to(root / "c1", target_is_directory=True)  # a folder linking to itself
    (root / "c1" / "dangling.png").symlink_to(tmp_path / "gone.png")  # a link to nothing
    splits = load_splits(DataConfig(path=str(root), test_fraction=0.3, workers=0), log=lambda s: None)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 17  # 16 images and the link to one


def _labels_csv(root: Path, names: list[str], encoding: str, newline: str, bom: bytes = b"") -> Path:
    images, labels = make_easy_images(2, 8, seed=5)
    rows = ["path,label"]
    for i, (image, label) in enumerate(zip(images, labels)):
        name = f"{names[label]}-{i}.png"
        Image.fromarray(image).save(root / name)
        rows.append(f"{name},{names[label]}")
    path = root / "labels.csv"
    path.write_bytes(bom + (newline.join(rows) + newline).encode(encoding))
    return path


@pytest.mark.parametrize("encoding, newline, bom", [
    ("utf-8", "\r\n", b"\xef\xbb\xbf"),  # Excel's "CSV UTF-8": a byte-order mark and CRLF
    ("cp1252", "\r\n", b""),  # Excel's CSV on Windows: Windows-1252 (the same bytes as Latin-1 for these names)
    ("utf-16", "\r\n", b""),  # Excel's "Unicode text": UTF-16 with its mark (the codec writes it)
    ("utf-8", "\r", b""),  # old Mac line ends
])
def test_a_labels_csv_in_the_encodings_spreadsheets_write_reads_as_written(tmp_path, encoding, newline, bom):
    root = tmp_path / "photos"
    root.mkdir()
    path = _labels_csv(root, ["héron", "mouette"], encoding, newline, bom)
    before = path.read_bytes()
    splits = load_splits(DataConfig(path=str(path), test_fraction=0.3, workers=0), log=lambda s: None)
    assert splits.class_names == ["héron", "mouette"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 16
    assert path.read_bytes() == before


def test_an_excel_csv_trains_end_to_end(tmp_path, capsys):
    root = tmp_path / "photos"
    root.mkdir()
    path = _labels_csv(root, ["héron", "mouette"], "utf-8", "\r\n", b"\xef\xbb\xbf")
    code = main(["run", "basenet", "--data", str(path), "--epochs", "1", "--device", "cpu", "--out",
                 str(tmp_path / "runs"), "--no-progress", "--set", "data.test_fraction=0.3"])
    assert code == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "runs" / "basenet").iterdir()
    with open(folder / "seed-1" / "per_class.csv", newline="", encoding="utf-8") as handle:
        assert {row["class"] for row in csv.DictReader(handle)} == {"héron", "mouette"}


def test_an_experiment_file_with_a_bom_and_crlf_reads(tmp_path, npz_data, capsys):
    config = tmp_path / "exp.yaml"
    config.write_bytes(b"\xef\xbb\xbfmodel: basenet\r\ntrain:\r\n  epochs: 1\r\nseeds: [1]\r\n")
    code = main(["run", "--config", str(config), "--data", str(npz_data), "--device", "cpu", "--out",
                 str(tmp_path / "runs"), "--no-progress"])
    assert code == 0, capsys.readouterr().err


# Every command's numeric options at and beyond their range: refused by the parser or the configuration
# before any work, in one line, exit code 2, nothing made on disk.
BEYOND = [
    ["run", "basenet", "--folds", "1"],
    ["run", "basenet", "--seeds", "-1"],
    ["run", "basenet", "--seeds", str(2 ** 32)],
    ["run", "basenet", "--set", "data.split_seed=4294967296"],
    ["run", "basenet", "--set", "train.accumulate=0"],
    ["run", "basenet", "--set", "train.grad_clip=-0.1"],
    ["run", "basenet", "--set", "train.optimizer.lr=nan"],
    ["run", "basenet", "--set", "data.val_fraction=0.95"],
    ["run", "basenet", "--set", "train.keep_best=val_acc", "--set", "data.val_fraction=0"],
    ["run", "basenet", "--set", "train.optimizer.betas=[1.5, 0.9]"],
    ["run", "basenet_pp", "--set", "model_args.dropout=2"],
    ["run", "cifar_recipe", "--set", "model_args.widths=[0, 0, 0]"],
    ["run", "basenet", "--set", "model_args.image_size=3"],
    ["predict", "RUN", "x.png", "--top-k", "0"],
    ["predict", "RUN", "x.png", "--batch-size", "-3"],
    ["predict", "RUN", "x.png", "--workers", "-1"],
    ["export", "RUN", "--opset", "99"],
    ["export", "RUN", "--calibration", "0"],
    ["export", "RUN", "--int8-tolerance", "inf"],
    ["serve", "RUN", "--port", "70000"],
    ["serve", "RUN", "--max-batch", "0"],
    ["serve", "RUN", "--max-wait-ms", "-1"],
    ["tune", "basenet", "--space", "s.yaml", "--trials", "0"],
    ["tune", "basenet", "--space", "s.yaml", "--workers", "0"],
    ["tune", "basenet", "--space", "s.yaml", "--final-seeds", "-2"],
    ["lr-find", "basenet", "--steps", "4"],
    ["lr-find", "basenet", "--start", "0"],
    ["lr-find", "basenet", "--phase", "-1"],
    ["interpret", "RUN", "--gradcam", "-1"],
    ["summary", "basenet", "--num-classes", "1"],
]


@pytest.mark.parametrize("argv", BEYOND, ids=[" ".join(a) for a in BEYOND])
def test_options_beyond_their_range_are_one_line_and_nothing_on_disk(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's refusal
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("cnnlab: error: ", "cnnlab ")) and ("error" in last), err
    assert list(tmp_path.iterdir()) == []
