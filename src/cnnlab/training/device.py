"""Device choice and seeding."""
from __future__ import annotations

import functools
import random

import numpy as np
import torch

from cnnlab.config import DEVICES
from cnnlab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; an explicit choice must be available."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps" and not has_mps:
        raise ConfigError("device 'mps' was asked for but Apple MPS is not available; use --device auto or cpu")
    if name not in DEVICES:
        raise ConfigError(f"unknown device '{name}'; valid: {', '.join(DEVICES)}")
    return torch.device(name)


# Below this many multiply-accumulates per image a training step is mostly per-op overhead
# (Python, dispatch, optimizer), so one run cannot keep many cores busy: BaseNet (0.6 M) takes
# 40.0 s for 10 epochs on 1 thread and 31.2 s on 2 (1.28x for twice the cores); BaseNet++
# (161 M) 43 s an epoch of 1,800 images on 1 thread, 26 s on 2.
SMALL_MODEL_MACS = 20_000_000


def cpu_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The value of the first `name : value` line of Linux's /proc/cpuinfo; None elsewhere."""
    from pathlib import Path

    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX512-BF16 or AMX; from Linux's
    /proc/cpuinfo, so False elsewhere). There bf16 autocast is ~2x fp32; without them it is
    emulated and several times slower (10x on an AVX2-only EPYC)."""
    flags = cpuinfo_field("flags", cpuinfo) or ""
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def cpu_threads(requested: int) -> int:
    """Threads for one run on the CPU: `requested` (train.threads), else every core."""
    return requested or cpu_cores()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): same seed, same device → same run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
