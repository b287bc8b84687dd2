"""Seeds trained together: one worker process per seed, the CPU's cores shared out between them.

A small model (BaseNet: 0.6 M multiply-adds an image) cannot keep many cores busy in one
process: each step is mostly per-op overhead (2 threads: 1.28x one thread). So each seed gets
its share of the cores (`train.threads`, recorded in its config.yaml) and the seeds train at
the same time. Each still trains through the same `train_seed` into its own folder (metrics,
checkpoint, results, exact resume) with its RNG seeded the same way as when trained alone:
the same data order, augmentation and dropout draws. Trained alone with the same
`train.threads` it computes the same numbers; with another thread count, a model with
BatchNorm differs in the last bits of its batch statistics (CPU reductions split by thread).

Ctrl-C reaches every process of the terminal's group: each worker saves its state and
reports back; the parent waits for them, then names the folder `cnnlab resume` finishes.
A SIGTERM sent to the parent alone is passed on to the workers.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnlab.openmp import short_spin_for_children
from cnnlab.config import ExperimentConfig
from cnnlab.data.images import DataSplits, ImageSet
from cnnlab.errors import CnnlabError, ConfigError, DiskFull, RunError, RunInterrupted
from cnnlab.training.device import SMALL_MODEL_MACS, cpu_cores

Log = Callable[[str], None]


@dataclass
class Unit:
    """One seed (or fold) to train: everything a worker needs, picklable."""
    name: str
    run_dir: Path
    splits: DataSplits
    seed: int
    resume: bool
    # a resumed unit's own train.threads (its config.yaml): BatchNorm's CPU reductions split by thread, so
    # a seed resumes with the threads it started with, alone or among others; None: the plan's share
    threads: int | None = None

    def config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """`cfg` with this unit's recorded thread count, if it has one."""
        if self.threads is None or self.threads == cfg.train.threads:
            return cfg
        import copy

        cfg = copy.deepcopy(cfg)
        cfg.train.threads = self.threads
        return cfg


# Single-threaded workers may outnumber the cores: without an OpenMP team there is no thread
# spinning at a barrier, so the OS time-slices them at little cost, and no core idles while the
# last seeds run alone. Measured on 2 cores, BaseNet 3 seeds x 5 epochs, whole process: 45.8 s
# one after another with both threads, 38.4 s as 2 workers (the third seed alone on one thread),
# 33.6 s as 3 single-threaded workers at once.
OVERSUBSCRIBE = 2


def plan(pending: int, threads: int = 0) -> tuple[int, int]:
    """(worker processes, threads each): every core in use, no more workers than seeds; with more
    seeds than cores, one thread each and up to OVERSUBSCRIBE workers a core."""
    cores = cpu_cores()
    if threads > 1:
        return max(1, min(pending, cores // threads)), threads
    workers = max(1, min(pending, OVERSUBSCRIBE * cores))
    return workers, threads or max(1, cores // workers)


def wins(cfg: ExperimentConfig, splits: DataSplits, pending: int, device_type: str,
         macs: Callable[[], int]) -> bool:
    """Whether seeds train together: `on`, or `auto` where it was measured to win (`auto` reads
    $CNNLAB_SEEDS_TOGETHER first, when set: on, off or auto).

    auto: images held in memory, and either a CUDA GPU or, on a CPU with 2 cores or more, a small
    model (`macs()` below SMALL_MODEL_MACS), whose steps are mostly per-op overhead that one
    thread does as fast as two: on 2 cores, BaseNet 3 seeds x 5 epochs took 33.6 s as three
    single-threaded workers against 45.8 s one after another (2 workers, the third seed then alone
    on one thread: 38.4 s, which is why `plan` oversubscribes). A model that fills the cores gains
    little (BaseNet++, 3 seeds x 2 epochs on 1,800 images: 180 s together, 193 s one after another)
    and needs a copy of its activations per seed, so it stays off there. On a GPU, a model trained
    on small images in memory is bound by per-step overhead and leaves the GPU mostly idle: on an
    H200, BaseNet++ 3 seeds x 50 epochs took 89.5 s together against 71 s for one seed alone.
    Streamed photos already use decoding workers and share a feature cache.
    """
    choice = cfg.seeds_together
    if choice == "auto":  # $CNNLAB_SEEDS_TOGETHER: a machine's own default (as $CNNLAB_ENGINE for --engine auto)
        choice = os.environ.get("CNNLAB_SEEDS_TOGETHER", "auto")
        if choice not in ("auto", "on", "off"):
            raise ConfigError(f"$CNNLAB_SEEDS_TOGETHER={choice!r}: expected auto, on or off")
    if choice == "off" or plan(pending, cfg.train.threads)[0] < 2:
        return False
    if choice == "on":
        return True
    in_memory = all(isinstance(s, ImageSet) for s in (splits.train, splits.test))
    if device_type == "cuda":
        return in_memory
    return device_type == "cpu" and in_memory and cpu_cores() >= 2 and macs() < SMALL_MODEL_MACS


# ----------------------------------------------------------------------------- in a worker

def _init_worker() -> None:
    state = {"interrupted": False}

    def once(signum, frame):  # the first Ctrl-C stops the run cleanly; more do not cut its saving short
        if not state["interrupted"]:
            state["interrupted"] = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, once)
    signal.signal(signal.SIGTERM, once)


def _train(cfg: ExperimentConfig, unit: Unit, progress: bool) -> tuple[str, str]:
    """Train one unit; return (outcome, message): exceptions with custom fields do not cross processes."""
    from cnnlab.training.learner import train_seed

    def log(line: str) -> None:
        for part in line.splitlines() or [""]:
            print(f"[{unit.name}] {part}" if part else "", flush=True)

    try:
        train_seed(unit.config(cfg), unit.run_dir, unit.splits, seed=unit.seed, resume=unit.resume, progress=False,
                   log=log)
        return "finished", ""
    except RunInterrupted as exc:
        return "interrupted", str(exc.epochs_done)
    except KeyboardInterrupt:  # before its training began: nothing of it to save
        return "interrupted", "0"
    except DiskFull as exc:  # its fields cross back; the parent raises it again, run_units adds the folder
        return "disk full", json.dumps([str(exc.path), exc.needed, exc.free])
    except CnnlabError as exc:
        return "failed", f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- in the parent

def train_together(cfg: ExperimentConfig, folder: Path, units: list[Unit], *, log: Log = print) -> None:
    """Train `units` in worker processes sharing the cores out (recorded as each run's train.threads);
    raise RunInterrupted(folder) after Ctrl-C, RunError on a failure."""
    import copy
    import multiprocessing

    import torch.multiprocessing  # noqa: F401 — tensors reach the workers through shared memory

    from cnnlab.training.trackers import prepare_shared_trackers

    workers, threads = plan(len(units), cfg.train.threads)
    prepare_shared_trackers(cfg)
    cfg = copy.deepcopy(cfg)
    cfg.train.threads = threads  # the trainer sets it; config.yaml records it, so a rerun is exact
    log(f"training {len(units)} seeds together: {workers} processes × {threads} thread(s) "
        "(--seeds-together off trains them one after another)")
    sys.stdout.flush()
    # spawn, not fork: a forked child of a process that already ran OpenMP threads can hang
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)
    with short_spin_for_children():  # the workers start here, with OpenMP's short spin (cnnlab/openmp.py)
        futures = {pool.submit(_train, cfg, unit, False): unit for unit in units}
    interrupted = False
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    except KeyboardInterrupt:
        interrupted = True
        for process in multiprocessing.active_children():  # the pool's workers; a SIGTERM to us alone: pass it on
            try:
                os.kill(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for future in futures:
            future.cancel()  # units not started yet stay unstarted
        wait([f for f in futures if not f.cancelled()])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    outcomes = {}
    for future, unit in futures.items():
        if future.cancelled():
            outcomes[unit.name] = ("interrupted", "0")
        elif future.exception() is not None:
            if interrupted:  # a worker stopped by Ctrl-C between two of its own checkpoints' writes
                outcomes[unit.name] = ("interrupted", "0")
                continue
            raise RunError(f"{unit.run_dir}: the worker training it stopped: {future.exception()!r}")
        else:
            outcomes[unit.name] = future.result()
    failed = [(name, message) for name, (state, message) in outcomes.items() if state == "failed"]
    if failed:
        raise RunError("; ".join(f"{folder / name}: {message}" for name, message in failed))
    full = [message for state, message in outcomes.values() if state == "disk full"]
    if full:  # the first one; each seed's own files before it are intact
        raise DiskFull(*json.loads(full[0]))
    stopped = [(folder / name, int(message)) for name, (state, message) in outcomes.items() if state == "interrupted"]
    if interrupted or stopped:
        run_dir, epochs = max(stopped, key=lambda s: s[1]) if stopped else (folder, 0)
        raise RunInterrupted(run_dir, epochs, resume_path=folder)
