"""The tutorials run: every command of each runnable page, in order, on tiny generated data in the real
on-disk formats, prints what the page shows (in shape: the figures differ on tiny data).

The pages' output was recorded on the real data by `python docs/_gen/tutorials.py record PAGE`."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import _cifar_pickles

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_gen"))

import tutorials  # noqa: E402  (docs/_gen/tutorials.py: the runner)

RUNNABLE = sorted(p for p in (ROOT / "docs").rglob("*.md") if tutorials.PAGE_COMMENT.search(p.read_text()[:500]))
# The first eight species of ../shared/data/birds-subset50, where the pages were recorded: a command may name
# one of their photos (new_photos/Black_footed_Albatross_1.jpg).
SPECIES = ("001.Black_footed_Albatross", "002.Groove_billed_Ani", "003.Parakeet_Auklet", "004.Red_winged_Blackbird",
           "005.Yellow_headed_Blackbird", "006.Bobolink", "007.Indigo_Bunting", "008.Lazuli_Bunting")


def _photo(path: Path, label: int, index: int) -> None:
    """A small JPEG whose class is a colour and a bright square at its own place."""
    rng = np.random.default_rng(label * 1000 + index)
    array = rng.integers(0, 80, size=(48, 56, 3), dtype=np.uint8)
    array[:, :, label % 3] += 120
    array[8 * (label // 3):8 * (label // 3) + 16, :16] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=90)


def tiny_cifar(folder: Path) -> list[str]:
    _cifar_pickles(folder / ".cache" / "data" / "cifar-100-python", per_class=6)
    return [f"fine{i}" for i in range(25)]


def tiny_species(folder: Path, per_species: int = 30) -> dict[str, list[Path]]:
    """Five species of small generated JPEGs, out of the way in `.tiny/`."""
    species = {}
    for label, name in enumerate(SPECIES):
        files = [folder / ".tiny" / name / f"{i:04d}.jpg" for i in range(per_species)]
        for i, path in enumerate(files):
            _photo(path, label, i)
        species[name] = files
    return species


def tiny_birds(folder: Path) -> list[str]:
    """The lab's layout: species folders beside train.txt and test.txt."""
    root, lists = folder / "birds", {"train": [], "test": []}
    for label, name in enumerate(SPECIES[:5]):
        for i in range(9):
            relative = f"{name}/{name.split('.')[1]}_{i:04d}.jpg"
            _photo(root / relative, label, i)
            lists["train" if i < 6 else "test"].append(relative)
    for split, lines in lists.items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return tutorials.bird_names(root / name for name in SPECIES[:5])


def tiny_photo_scene(name: str):
    """One of the photo scenes (docs/_gen/tutorials.photo_scenes) on tiny species, as the real ones on birds."""
    def scene(folder: Path) -> list[str]:
        return tutorials.photo_scenes(tiny_species(folder), photos_per_species=14)[name](folder)
    return scene


TINY_SCENES = {"cifar": tiny_cifar, "birds": tiny_birds,
               **{name: tiny_photo_scene(name) for name in ("photos", "longtail", "hf")}}


def test_the_runnable_tutorials_are_found_and_use_known_data():
    names = {p.relative_to(ROOT / "docs").as_posix() for p in RUNNABLE}
    # every tutorial runs: these here, the Python API's blocks and notebook in test_learner / test_notebook
    tutorial_pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs" / "tutorials").glob("*.md")}
    assert tutorial_pages - names == {"tutorials/python-api.md"}
    for path in RUNNABLE:
        page = tutorials.read_page(path)
        assert set(page.scenes) <= set(TINY_SCENES), path
        assert any(c.shown for c in page.commands), f"{path}: not recorded (python docs/_gen/tutorials.py record)"
        # the real data's scenes are the same ones
        assert set(page.scenes) <= set(tutorials.real_scenes(Path("/nowhere")))


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.relative_to(ROOT / "docs").as_posix())
def test_a_tutorial_runs_and_prints_what_it_shows(path, tmp_path, every_core):
    problems = tutorials.run_page(tutorials.read_page(path), tmp_path, TINY_SCENES, timeout=300)
    assert not problems, "\n\n".join(problems)


def test_the_check_sees_a_changed_message_a_missing_line_and_a_failing_command(tmp_path):
    page_path = tmp_path / "page.md"
    page_path.write_text("<!-- runs with: -->\n# t\n\n```console\n$ echo 'accuracy 12.5 %'; echo done\n"
                         "accuracy 3.25 %\ndone\n$ printf 'a\\nb\\nc\\nd\\n'\na\n...\nd\n```\n")
    folder = tmp_path / "run"
    folder.mkdir()
    assert tutorials.run_page(tutorials.read_page(page_path), folder, {}) == []  # figures may differ, `...` elides
    page_path.write_text(page_path.read_text().replace("accuracy 3.25 %", "top-1 3.25 %"))
    assert "printed something else" in tutorials.run_page(tutorials.read_page(page_path), folder, {})[0]
    page_path.write_text(page_path.read_text().replace("echo done", "false"))
    assert "exited with 1" in tutorials.run_page(tutorials.read_page(page_path), folder, {})[0]
    page_path.write_text("# no marker\n")
    with pytest.raises(ValueError, match="not a runnable tutorial"):
        tutorials.read_page(page_path)


def test_recording_writes_what_was_printed_and_abbreviates_a_long_output(tmp_path):
    page_path = tmp_path / "page.md"
    page_path.write_text("<!-- runs with: -->\n```console\n$ echo hello\nold\n$ seq 1 60\n```\ntext after\n")
    folder = tmp_path / "run"
    folder.mkdir()
    tutorials.record_page(tutorials.read_page(page_path), folder, {})
    lines = page_path.read_text().splitlines()
    assert lines[:4] == ["<!-- runs with: -->", "```console", "$ echo hello", "hello"]
    assert lines[4] == "$ seq 1 60" and lines[5:5 + tutorials.HEAD] == [str(i) for i in range(1, tutorials.HEAD + 1)]
    assert lines[5 + tutorials.HEAD] == "..." and lines[-3] == "60" and lines[-2:] == ["```", "text after"]
