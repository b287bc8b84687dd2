"""Faults caused for real: SIGKILL at chosen moments (failpoints.py) again and again, two runs on one cold
cache at once, damaged cache files, a full disk (a mounted tmpfs), a folder another process trains."""
from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


# A linear probe on cached features, then everything fine-tuned (the seeds trained together).
TWO_PHASES = ["--set", "data.image_size=64", "data.workers=0", "model_args.backbone=efficientnet_lite0",
              "model_args.weights=none", "train.batch_size=4", "train.phases.0.epochs=2", "train.phases.1.epochs=2",
              "train.ema=0"]


def _env(tmp_path: Path, cache: str, **extra) -> dict:
    env = {**os.environ, "CNNLAB_CACHE": str(tmp_path / cache), "PYTHONUNBUFFERED": "1", **extra}
    env.pop("CNNLAB_FAILPOINT", None)
    return {**env, **extra}


def _cnnlab(args: list, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    # a session of its own: a failpoint kills the whole process group, never the test runner
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, start_new_session=True)


def _rows(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(handle)]


def _same_outcome(a: Path, b: Path) -> None:
    """Two seed folders hold the same metrics, weights and test figures (timings aside)."""
    assert _rows(a) == _rows(b)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((f / "results.json").read_text()) for f in (a, b))
    for key in ("test_loss", "test_acc", "test_bal_acc", "test_macro_f1", "final_val_loss", "kept_epoch"):
        assert ra[key] == rb[key], key


@pytest.mark.slow
def test_five_kills_at_chosen_moments_end_as_an_uninterrupted_run(birds_lab, tmp_path):
    """SIGKILL to the whole process group (the parent and the 2 seeds' workers) while the split memo is
    written, while the feature cache is written, at a checkpoint write of the probe phase, as the
    fine-tuning phase starts, and at a checkpoint write of the fine-tuning phase; each time the
    command is run again (no folder yet) or resumed; the end is bit for bit the uninterrupted run's."""
    run = ["run", "birdnet_recipe", "--data", birds_lab, "--device", "cpu", "--seeds", 1, 2,
           "--seeds-together", "on", "--no-progress", *TWO_PHASES]
    clean = _cnnlab([*run, "--out", tmp_path / "clean"], _env(tmp_path, "clean-cache"))
    assert clean.returncode == 0, clean.stderr
    (reference,) = (tmp_path / "clean" / "birdnet_recipe").iterdir()

    rng = random.Random(28)  # the moments are drawn, seeded: the test is the same every time
    moments = ["write splits/*@1",
               f"write features/*@{rng.randint(1, 2)}",
               f"write seed-*/checkpoint.pt@{rng.randint(1, 3)}",
               f"seed * phase 1 start@{rng.randint(1, 3)}",
               f"write seed-*/checkpoint.pt@{rng.randint(2, 4)}"]
    out, cache = tmp_path / "killed", "killed-cache"
    for attempt, moment in enumerate(moments):
        counter = tmp_path / f"hits-{attempt}"
        env = _env(tmp_path, cache, CNNLAB_FAILPOINT=moment, CNNLAB_FAILPOINT_COUNT=str(counter))
        folders = list((out / "birdnet_recipe").iterdir()) if (out / "birdnet_recipe").exists() else []
        command = ["resume", folders[0], "--no-progress"] if folders else [*run, "--out", out]
        done = _cnnlab(command, env)
        assert done.returncode == -9, f"{moment}: not killed ({done.returncode}): {done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr
    (folder,) = (out / "birdnet_recipe").iterdir()
    states = {json.loads((folder / s / "status.json").read_text())["state"] for s in ("seed-1", "seed-2")
              if (folder / s / "status.json").is_file()}
    assert states <= {"running"}  # a SIGKILL leaves no chance to write another state
    done = _cnnlab(["resume", folder, "--no-progress"], _env(tmp_path, cache))
    assert done.returncode == 0, done.stderr
    for seed in ("seed-1", "seed-2"):
        _same_outcome(reference / seed, folder / seed)
        assert not list((folder / seed).glob("checkpoint-phase*")) and not list((folder / seed).glob(".*.tmp"))
    # one entry per split and seed (an untrained backbone differs by seed), as the clean run's cache holds:
    # the killed writes left neither a second copy nor a half file behind
    entries = sorted(p.name for p in (tmp_path / cache / "features").glob("*.safetensors"))
    assert entries == sorted(p.name for p in (tmp_path / "clean-cache" / "features").glob("*.safetensors"))
    assert len(entries) == 6 and not list((tmp_path / cache / "features").glob(".*.tmp"))


@pytest.mark.slow
def test_two_runs_at_once_on_a_cold_shared_cache_compute_each_entry_once(birds_lab, tmp_path):
    run = ["run", "birdnet_v0", "--data", birds_lab, "--device", "cpu", "--seeds", 1, "--no-progress",
           "--out", tmp_path / "runs", "--set", "data.image_size=64", "data.workers=0",
           "model_args.backbone=efficientnet_lite0", "model_args.weights=none", "train.batch_size=4",
           "train.phases.0.epochs=2"]
    env = _env(tmp_path, "shared-cache")
    first, second = (subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, run)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env) for _ in range(2))
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    folders = sorted((tmp_path / "runs" / "birdnet_v0").iterdir())
    assert len(folders) == 2  # never one folder shared
    _same_outcome(folders[0] / "seed-1", folders[1] / "seed-1")
    entries = sorted((tmp_path / "shared-cache" / "features").glob("*.safetensors"))
    assert len(entries) == 3 and not list((tmp_path / "shared-cache" / "features").glob(".*.tmp"))
    computed = 0  # each split's features computed by one of the two runs, read by the other
    for out, _ in outputs:
        (line,) = [line for line in out.splitlines() if line.startswith("features: ")]
        match = re.search(r"for (\d) of 3 splits", line)
        computed += 0 if "reused from the cache" in line else int(match.group(1)) if match else 3
    assert computed == 3, [out for out, _ in outputs]
    memo = list((tmp_path / "shared-cache" / "splits").glob("*.npz"))
    assert len(memo) == 1


def _flip_a_byte(path: Path, where: float = 0.7) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))


def test_damaged_cache_entries_are_named_recomputed_and_change_nothing(birds_lab, tmp_path):
    from cnnlab.config import load_experiment
    from cnnlab.studies import run_experiment

    overrides = {"data.path": str(birds_lab), "device": "cpu", "seeds": [1], "data.image_size": 64,
                 "data.workers": 0, "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none",
                 "train.batch_size": 4, "train.phases.0.epochs": 2}
    lines: list[str] = []
    clean = run_experiment(load_experiment("birdnet_v0", overrides={**overrides, "out": str(tmp_path / "a")}),
                           progress=False, log=lines.append) / "seed-1"
    entries = sorted((tmp_path / "cnnlab-cache" / "features").glob("*.safetensors"))
    (memo,) = (tmp_path / "cnnlab-cache" / "splits").glob("*.npz")
    assert len(entries) == 3
    _flip_a_byte(entries[0])  # a bit flipped in the features' bytes
    entries[1].write_bytes(entries[1].read_bytes()[: len(entries[1].read_bytes()) // 2])  # truncated
    _flip_a_byte(memo, 0.5)
    lines.clear()
    again = run_experiment(load_experiment("birdnet_v0", overrides={**overrides, "out": str(tmp_path / "b")}),
                           progress=False, log=lines.append) / "seed-1"
    damaged = [line for line in lines if "is damaged" in line]
    assert len(damaged) == 2 and all("computing it again" in line for line in damaged)
    assert any("do not match the digest" in line for line in damaged)
    assert any("unreadable" in line for line in damaged)
    _same_outcome(clean, again)
    for entry in entries:  # every entry whole again
        assert set(load_file(str(entry))) == {"features", "labels"}


def test_a_damaged_split_memo_is_named_and_drawn_again(tmp_path, capsys):
    import numpy as np

    from cnnlab.data.split_memo import remembered

    labels = np.repeat(np.arange(4), 10)
    draw = lambda: (np.arange(0, 40, 2), np.arange(1, 40, 2))  # noqa: E731
    first = remembered("holdout", labels, (0.5, 0), draw)
    (memo,) = (tmp_path / "cnnlab-cache" / "splits").glob("*.npz")
    _flip_a_byte(memo, 0.5)
    again = remembered("holdout", labels, (0.5, 0), draw)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and "drawing the split again" in err
    memo.write_bytes(memo.read_bytes()[:30])  # truncated
    remembered("holdout", labels, (0.5, 0), draw)
    assert "is damaged" in capsys.readouterr().err


def _mount_tmpfs(folder: Path, size_kb: int) -> None:
    folder.mkdir(parents=True)
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (and mount)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {done.stderr.strip()}")


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path, leave: int) -> Path:
    """A file taking all the space of `folder`'s disk but `leave` bytes."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_and_resume_finishes_it(npz_data, tmp_path):
    disk = tmp_path / "small-disk"
    _mount_tmpfs(disk, 8 * 1024)
    try:
        from cnnlab.config import load_experiment
        from cnnlab.studies import run_experiment

        overrides = {"data.path": str(npz_data), "train.epochs": 3, "seeds": [4], "device": "cpu",
                     "data.subset": 40, "out": str(tmp_path / "clean")}
        reference = run_experiment(load_experiment("basenet", overrides=overrides), progress=False,
                                   log=lambda s: None) / "seed-4"
        size = (reference / "checkpoint.pt").stat().st_size
        # room for the small files and one checkpoint; the second needs as much again beside the first
        filler = _fill(disk, leave=size + size // 2)
        full = _cnnlab(["run", "basenet", "--data", npz_data, "--epochs", 3, "--seeds", 4, "--device", "cpu",
                        "--no-progress", "--out", disk / "runs", "--set", "data.subset=40"], _env(tmp_path, "cache"))
        assert full.returncode == 2, full.stderr
        message = full.stderr.strip()
        assert message.count("\n") == 0 and "Traceback" not in message, message
        (folder,) = (disk / "runs" / "basenet").iterdir()
        assert "no space left on the disk of" in message and str(folder / "seed-4") in message
        assert "needs" in message and "kB" in message and f"cnnlab resume {folder}" in message
        saved = torch.load(folder / "seed-4" / "checkpoint.pt", weights_only=True)  # the last one, whole
        assert saved["epoch"] == 1 and len(_rows(folder / "seed-4")) == 1
        assert not list((folder / "seed-4").glob(".*.tmp"))
        filler.unlink()
        done = _cnnlab(["resume", folder, "--no-progress"], _env(tmp_path, "cache"))
        assert done.returncode == 0, done.stderr
        _same_outcome(reference, folder / "seed-4")
    finally:
        _unmount(disk)


def test_a_feature_cache_on_a_full_disk_costs_the_cache_not_the_run(birds_lab, tmp_path):
    from cnnlab.config import load_experiment
    from cnnlab.studies import run_experiment

    disk = tmp_path / "full-cache"
    _mount_tmpfs(disk, 256)
    try:
        _fill(disk, leave=0)
        lines: list[str] = []
        cfg = load_experiment("birdnet_v0", overrides={
            "data.path": str(birds_lab), "device": "cpu", "seeds": [1], "data.image_size": 64, "data.workers": 0,
            "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none", "train.batch_size": 4,
            "train.phases.0.epochs": 1, "train.feature_cache_dir": str(disk / "features"), "out": str(tmp_path)})
        folder = run_experiment(cfg, progress=False, log=lines.append)
        assert (folder / "seed-1" / "results.json").is_file()
        warnings = [line for line in lines if "features not cached" in line]
        assert warnings and all(str(disk) in line and "no space left" in line for line in warnings)
    finally:
        _unmount(disk)


def test_a_folder_another_process_trains_is_refused_in_one_line(npz_data, tmp_path):
    from cnnlab.config import load_experiment
    from cnnlab.errors import RunError, RunInterrupted
    from cnnlab.studies import resume, run_experiment
    from conftest import interrupt_after

    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "out": str(tmp_path), "device": "cpu",
                                                "train.epochs": 2, "seeds": [1]})
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=interrupt_after(1))
    (folder,) = (tmp_path / "basenet").iterdir()
    # an orphaned worker of a killed run, still training seed 1, holds its lock
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"h = open({str(folder / 'seed-1' / '.lock')!r}, 'a+'); fcntl.flock(h, fcntl.LOCK_EX)\n"
        "h.seek(0); h.truncate(); h.write('4242'); h.flush(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=r"another cnnlab process \(pid 4242\) is training this run now"):
            resume(folder, progress=False, log=lambda s: None)
    finally:
        holder.kill()
        holder.wait()
    resume(folder, progress=False, log=lambda s: None)  # the lock went with its process
    assert (folder / "seed-1" / "results.json").is_file()


def test_a_run_reading_its_features_from_the_cache_equals_one_that_computed_them(birds_lab, tmp_path):
    """A DataLoader drew its base seed from the global generator: computing the features (one loader per
    split) moved the generator that the fine-tuning phase's dropout then drew from, reading them did not."""
    from cnnlab.config import load_experiment
    from cnnlab.studies import run_experiment

    overrides = {"data.path": str(birds_lab), "device": "cpu", "seeds": [2], "data.image_size": 64, "data.workers": 0,
                 "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none", "train.batch_size": 4,
                 "train.phases.0.epochs": 1, "train.phases.1.epochs": 1, "train.ema": 0.0}
    runs = []
    for name in ("computed", "from-cache"):
        lines: list[str] = []
        cfg = load_experiment("birdnet_recipe", overrides={**overrides, "out": str(tmp_path / name)})
        runs.append(run_experiment(cfg, progress=False, log=lines.append) / "seed-2")
        assert any(("reused from the cache" if name == "from-cache" else "computed and cached") in line
                   for line in lines)
    _same_outcome(*runs)
