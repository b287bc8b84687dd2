"""Tutorials that run: a page's `console` blocks, executed in order; what the page shows is what they printed.

A runnable page names the data it needs in a comment on its first lines, `<!-- runs with: cifar birds -->`
(`<!-- runs with: cifar | varies: ^lab -->` also names, as a regular expression, the lines that depend on the
data set's size, such as the lab's reference row, which the check leaves out);
each of its ```console blocks holds commands (`$ ` lines; a line ending in `\\` goes on) and, after each, the
output the command printed. Every command runs with bash, one after the other, in one scratch folder where
the named data was laid out first (a "scene"), with the feature cache, the CIFAR-100 folder and Hugging Face
offline pointed into that folder.

    python docs/_gen/tutorials.py record docs/tutorials/lab.md [--shared ../shared/data]
        runs the page on the real data of ../shared/data and writes what each command printed into the page
        (an output of more than LONG lines keeps its head and tail around a `...` line);
    python docs/_gen/tutorials.py check docs/tutorials/lab.md
        runs it again on the same data and says where the printed output differs from the page's in shape
        (timings never repeat exactly).

`tests/test_tutorials.py` runs every runnable page on tiny generated data in the same on-disk formats.
There the figures differ, so the check compares the output's *shape*: every number is `#`, runs of spaces
and of rule characters are one; a line `...` on the page stands for any lines. A renamed option, a message
that changed, a column or a line that went missing all fail it.
"""
from __future__ import annotations

import argparse
import difflib
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
LONG = 40  # lines of output a page shows in full; a longer one keeps HEAD + `...` + TAIL
HEAD, TAIL = 8, 28  # a run's tail holds its results table and its probabilities table
ELIDED = "..."
RECORDED_COMMENT = re.compile(r"<!--\s*recorded with the classes:\s*(.*?)\s*-->")
PAGE_COMMENT = re.compile(r"<!--\s*runs with:\s*([\w\s-]*?)\s*(?:\|\s*varies:\s*(.*?)\s*)?-->")


@dataclass
class Command:
    text: str  # as bash receives it (continuations joined)
    shown: list[str]  # the output lines the page shows
    lines: tuple[int, int] = (0, 0)  # where its output sits in the page: [start, end) line numbers


@dataclass
class Page:
    path: Path
    scenes: list[str]
    varies: re.Pattern | None = None  # lines that depend on the data set's size, left out of the check
    recorded_names: list[str] = field(default_factory=list)  # the class names of the data it was recorded on
    commands: list[Command] = field(default_factory=list)


def read_page(path: Path) -> Page:
    """The page's scenes and commands; a page without the `runs with` comment is not runnable (ValueError)."""
    lines = Path(path).read_text().splitlines()
    found = PAGE_COMMENT.search("\n".join(lines[:5]))
    if not found:
        raise ValueError(f"{path}: not a runnable tutorial (no '<!-- runs with: ... -->' in its first lines)")
    page = Page(Path(path), found.group(1).split(), re.compile(found.group(2)) if found.group(2) else None)
    inside, current = False, None
    i = 0
    while i < len(lines):
        line = lines[i]
        if not inside and line.strip() == "```console":
            inside = True
        elif inside and line.strip() == "```":
            inside, current = False, None
        elif inside and line.startswith("$ "):
            text = line[2:]
            while text.endswith("\\"):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            current = Command(text.strip(), [], (i + 1, i + 1))
            page.commands.append(current)
        elif inside:
            if current is None:
                raise ValueError(f"{path}:{i + 1}: output before any '$ ' command in a console block")
            current.shown.append(line)
            current.lines = (current.lines[0], i + 1)
        i += 1
    recorded = RECORDED_COMMENT.search("\n".join(lines))
    page.recorded_names = recorded.group(1).split() if recorded else []
    if not page.commands:
        raise ValueError(f"{path}: a runnable tutorial without any '$ ' command in a ```console block")
    return page


def environment(folder: Path) -> dict:
    """What every command of a tutorial runs with: caches inside the scratch folder, nothing downloaded."""
    env = dict(os.environ)
    env.update(CNNLAB_CACHE=str(folder / ".cache" / "cnnlab"), CNNLAB_DATA=str(folder / ".cache" / "data"),
               HF_HOME=str(folder / ".cache" / "huggingface"), HF_HUB_OFFLINE="1", COLUMNS="100",
               TORCH_HOME=str(folder / ".cache" / "torch"),  # an empty hub cache: no weights from ~/.cache
               PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    for knob in ("FORCE_COLOR", "CNNLAB_SEEDS_TOGETHER", "CNNLAB_ENGINE"):  # the tutorial runs as a user runs it,
        env.pop(knob, None)                                              # not as the test suite's defaults say
    return env


def run_command(command: Command, folder: Path, env: dict, timeout: float) -> tuple[int, list[str]]:
    done = subprocess.run(["bash", "-c", command.text], cwd=folder, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    printed = done.stdout.replace(str(folder) + os.sep, "").replace(str(folder), ".").rstrip("\n")
    return done.returncode, [line.rstrip() for line in printed.splitlines()]


def shape(line: str, names: re.Pattern | None = None) -> str:
    """A line with its figures taken out: the scenes' class names → <class>, run folders' stamps
    (fileio.new_run_folder) → <stamp>, durations (`2.9s`, `2m21s`) → <time>, numbers (with their sign) → #, runs of spaces and
    of rule characters → one."""
    if names is not None:
        line = names.sub("<class>", line)
    line = re.sub(r"\b\d{8}-\d{6}-[0-9a-f]{4}\b", "<stamp>", line)
    line = re.sub(r"\b(?:\d+h)?(?:\d+m)?\d+(?:\.\d+)?s\b", "<time>", line)  # 2.9s, ETA 2m21s, 1h02m
    line = re.sub(r"[-+−]?\d+(?:[.,:]\d+)*", "#", line)  # a gain's sign is a figure too
    line = re.sub(r"([-─━═=_|+·.])\1+", r"\1", line)
    return re.sub(r"\s+", " ", line).strip()


def names_pattern(names) -> re.Pattern | None:
    """One pattern for every class name the scenes laid out (the longest first: `001.Albatross` before
    `Albatross`)."""
    names = sorted({n for n in names if n}, key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(re.escape(n) for n in names) + r")(?![A-Za-z0-9_])") \
        if names else None


def shapes_match(shown: list[str], printed: list[str], varies: re.Pattern | None = None,
                 names: re.Pattern | None = None) -> bool:
    if varies is not None:
        shown, printed = ([x for x in lines if not varies.search(x)] for lines in (shown, printed))
    pattern = "".join(r"(?:[^\n]*\n)*?" if line.strip() == ELIDED else re.escape(shape(line, names)) + r"\n"
                      for line in shown)
    return re.fullmatch(pattern, "".join(shape(line, names) + "\n" for line in printed)) is not None


def abbreviate(printed: list[str]) -> list[str]:
    return printed if len(printed) <= LONG else [*printed[:HEAD], ELIDED, *printed[-TAIL:]]


# A scene lays out one kind of data in the scratch folder and returns the class names it holds (which the
# check reads as one word: a tiny data set's classes are not the real one's).
Scene = Callable[[Path], list[str]]


def lay_out(page: Page, folder: Path, scenes: dict[str, Scene]) -> list[str]:
    """The page's scenes laid out in `folder`; the class names they hold (ValueError: a scene not known)."""
    names = []
    for name in page.scenes:
        if name not in scenes:
            raise ValueError(f"{page.path}: unknown scene {name!r} (known: {', '.join(sorted(scenes))})")
        names += scenes[name](folder) or []
    return names


def downloaded(printed: list[str]) -> bool:
    """Whether a command fetched something: torch.hub's line (a tutorial runs offline)."""
    return any(line.startswith("Downloading: ") for line in printed)


def run_page(page: Page, folder: Path, scenes: dict[str, Scene], *, timeout: float = 600) -> list[str]:
    """Lay out the page's scenes in `folder`, run its commands in order; return one message per command
    whose output does not match the page's in shape. A command that fails (non-zero exit) must show an
    `error` line on the page."""
    try:
        names = names_pattern(list(page.recorded_names) + lay_out(page, folder, scenes))
    except ValueError as exc:
        return [str(exc)]
    env, problems = environment(folder), []
    for command in page.commands:
        code, printed = run_command(command, folder, env, timeout)
        where = f"{page.path}:{command.lines[0]}: $ {command.text}"
        if downloaded(printed):
            problems.append(f"{where}\ntried to download:\n" + "\n".join(printed[:3]))
            break
        if code and not any("error" in line for line in command.shown):
            problems.append(f"{where}\nexited with {code}:\n" + "\n".join(printed[-20:]))
            break  # the next commands build on this one
        if not shapes_match(command.shown, printed, page.varies, names):
            diff = difflib.unified_diff([shape(x, names) for x in command.shown], [shape(x, names) for x in printed],
                                        "shown on the page", "printed", lineterm="", n=2)
            problems.append(f"{where}\nprinted something else:\n" + "\n".join(diff))
    return problems


def record_page(page: Page, folder: Path, scenes: dict[str, Scene], timeout: float = 3600) -> None:
    """Run the page and write each command's printed output into it (abbreviated when long), and the class
    names of the data it ran on in a comment at its end (which the check reads as one word)."""
    names = lay_out(page, folder, scenes)
    env = environment(folder)
    lines = page.path.read_text().splitlines()
    outputs = []
    for command in page.commands:
        code, printed = run_command(command, folder, env, timeout)
        print(f"$ {command.text}  → exit {code}, {len(printed)} lines", flush=True)
        if downloaded(printed):
            raise SystemExit(f"$ {command.text}: tried to download; a tutorial runs offline\n" + "\n".join(printed[:3]))
        if code and not any("error" in line for line in printed):
            raise SystemExit("\n".join(printed[-30:]))
        outputs.append(abbreviate(printed))
    for command, output in sorted(zip(page.commands, outputs), key=lambda c: -c[0].lines[0]):
        start, end = command.lines
        lines[start:end] = output
    lines = [line for line in lines if not RECORDED_COMMENT.search(line)]
    while lines and not lines[-1].strip():
        lines.pop()
    if names:
        lines += ["", f"<!-- recorded with the classes: {' '.join(sorted(set(names)))} -->"]
    page.path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- the real data's scenes

def bird_names(species_folders) -> list[str]:
    """A species folder `001.Black_footed_Albatross` is also read as its name alone."""
    return [n for p in species_folders for n in (p.name, p.name.split(".", 1)[-1])]


def photo_scenes(species: dict[str, list[Path]], *, photos_per_species: int | None = None) -> dict[str, Scene]:
    """The scenes made of bird photos, from `species` (folder name `001.Name` → its JPEG files, sorted):

    photos    the first five species as a class folder of one's own photos, `photos/NAME/`, with their first
              three photos put aside as `new_photos/NAME_K.jpg` (K = 1, 2, 3; the pages' commands name them);
    longtail  the first eight as a long-tailed class folder, `longtail/NAME/`: species k keeps 0.7^k of its photos
              (at least 8);
    hf        the first five as a Hugging Face dataset saved to disk, `birds_hf/` (Image and ClassLabel columns,
              train and test splits: 3/4 and 1/4 of each species), and the same as Parquet files, `tables/`.
    """
    ordered = sorted(species)

    def photos(folder: Path) -> list[str]:
        (folder / "new_photos").mkdir()
        for name in ordered[:5]:
            short = name.split(".", 1)[-1]
            (folder / "photos" / short).mkdir(parents=True)
            for i, image in enumerate(species[name][:photos_per_species]):
                target = folder / "new_photos" / f"{short}_{i + 1}.jpg" if i < 3 else folder / "photos" / short / image.name
                target.symlink_to(image)
        return bird_names(Path(n) for n in ordered[:5])

    def longtail(folder: Path) -> list[str]:
        for k, name in enumerate(ordered[:8]):
            target = folder / "longtail" / name.split(".", 1)[-1]
            target.mkdir(parents=True)
            files = species[name]
            for image in files[:max(8, round(len(files) * 0.7 ** k))]:
                (target / image.name).symlink_to(image)
        return bird_names(Path(n) for n in ordered[:8])

    def hugging_face(folder: Path) -> list[str]:
        from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

        names = [n.split(".", 1)[-1] for n in ordered[:5]]
        rows = {"train": {"image": [], "label": []}, "test": {"image": [], "label": []}}
        for label, name in enumerate(ordered[:5]):
            files = species[name]
            for i, image in enumerate(files):
                split = rows["train" if i < len(files) * 3 // 4 else "test"]
                split["image"].append({"bytes": image.read_bytes(), "path": None})
                split["label"].append(label)
        features = Features({"image": Image(), "label": ClassLabel(names=names)})
        data = DatasetDict({split: Dataset.from_dict(r, features=features) for split, r in rows.items()})
        data.save_to_disk(str(folder / "birds_hf"))
        (folder / "tables").mkdir()
        for split, table in data.items():
            table.to_parquet(str(folder / "tables" / f"{split}.parquet"))
        return bird_names(Path(n) for n in ordered[:5])

    return {"photos": photos, "longtail": longtail, "hf": hugging_face}


def real_scenes(shared: Path) -> dict[str, Scene]:
    """The scenes on ../shared/data: the lab's CIFAR-100 subset (as the official python files), the lab's
    birds folder, and the photo scenes made of its species."""
    def cifar(folder: Path) -> list[str]:
        import numpy as np

        target = folder / ".cache" / "data" / "cifar-100-python"
        target.mkdir(parents=True, exist_ok=True)
        names = None
        for split in ("train", "test"):
            npz = np.load(shared / "cifar100-subset25" / f"{split}.npz")
            names = [str(n) for n in npz["class_names"]]
            data = npz["images"].transpose(0, 3, 1, 2).reshape(len(npz["images"]), -1)
            batch = {"data": data, "fine_labels": npz["labels"].tolist(),
                     "coarse_labels": [0] * len(data), "filenames": [f"{i}.png" for i in range(len(data))]}
            (target / split).write_bytes(pickle.dumps(batch, protocol=2))
        (target / "meta").write_bytes(pickle.dumps({"fine_label_names": names + [f"other{i}" for i in range(75)],
                                                    "coarse_label_names": ["all"] * 20}, protocol=2))
        return names

    birds_folder = shared / "birds-subset50"

    def birds(folder: Path) -> list[str]:
        (folder / "birds").symlink_to(birds_folder, target_is_directory=True)
        return bird_names(p for p in birds_folder.iterdir() if p.is_dir())

    species = {p.name: sorted(p.glob("*.jpg")) for p in birds_folder.iterdir() if p.is_dir()} \
        if birds_folder.is_dir() else {}
    return {"cifar": cifar, "birds": birds, **photo_scenes(species)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("record", "check"))
    ap.add_argument("pages", nargs="+", type=Path)
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("CNNLAB_SHARED_DATA", ROOT.parent / "shared"
                                                                       / "data")))
    ap.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = ap.parse_args()
    import tempfile

    for path in args.pages:
        page = read_page(path)
        folder = args.keep or Path(tempfile.mkdtemp(prefix="cnnlab-tutorial-"))
        folder.mkdir(parents=True, exist_ok=args.keep is None)
        if args.action == "record":
            record_page(page, folder.resolve(), real_scenes(args.shared.resolve()))
            print(f"recorded {path}")
        else:
            problems = run_page(page, folder.resolve(), real_scenes(args.shared.resolve()))
            print("\n\n".join(problems) or f"{path}: every command printed what the page shows")


if __name__ == "__main__":
    main()
