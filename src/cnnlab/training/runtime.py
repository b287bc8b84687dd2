"""Where and how a run computes, resolved once: device, precision, CPU threads, the feature engine, seeding.

Every study builds one `Runtime` from the configuration (`Runtime.resolve(cfg)`) and hands it to
the `Learner` (or uses it directly for a frozen backbone's features: the classic heads, the probe),
so "bf16 on this machine?" or "which engine extracts features?" is answered in one place.

Precision (`train.amp`):

    auto  bf16 on CUDA GPUs of compute capability >= 8.0 (Ampere on) and on CPUs with native bf16
          (AVX512-BF16, AMX); fp16 with a gradient scaler on older CUDA GPUs (a T4 — the free Colab
          GPU the lab ran on — or a V100, where bf16 is emulated or absent); fp32 elsewhere
    bf16  bf16 autocast on CUDA and any CPU (emulated, so slow, on CPUs without native bf16)
    fp16  fp16 autocast with a gradient scaler (torch.amp.GradScaler) on CUDA and on the CPU
    off   fp32

Precision does not move the lab's figures beyond seed noise: BaseNet 45.15 ± 1.89 % in bf16 (H200)
against 44.91 ± 1.23 % in fp32 (CPU); BaseNet++ 66.01 ± 0.17 % in bf16 against the lab's 66.25 %
(3 seeds each, 50 epochs). So `auto` takes a half precision wherever it is fast. fp16's narrow range
needs the loss scaled before `backward` and the gradients unscaled before clipping and the step
(training/steps.py does both); the scaler's state is checkpointed, so a resumed run is exact.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from cnnlab.errors import ConfigError
from cnnlab.training.allocator import keep_freed_memory
from cnnlab.training.device import cpu_has_native_bf16, cpu_threads, resolve_device, seed_everything
from cnnlab.engines import resolve_engine

PRECISIONS = ("bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_bf16_counts_as_native() -> bool:
    """cpu_has_native_bf16(), unless $CNNLAB_CPU_BF16 (0 or 1) says otherwise: 0 keeps `auto` in fp32
    on any CPU (the test suite does, so its figures are the same on every machine)."""
    forced = os.environ.get("CNNLAB_CPU_BF16", "")
    if forced not in ("", "0", "1"):
        raise ConfigError(f"$CNNLAB_CPU_BF16: expected 0 or 1, got {forced!r}")
    return cpu_has_native_bf16() if forced == "" else forced == "1"


def _cuda_has_bf16(device: torch.device) -> bool:
    """Compute capability >= 8.0 (A100, RTX 30xx, H100 ...): bf16 in hardware. A T4 (7.5) or V100 (7.0)
    emulates it or lacks it, and takes fp16 with a scaler."""
    if not torch.cuda.is_available():
        return True  # a CUDA device named where none exists fails in resolve_device first
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


def resolve_precision(mode: str, device: torch.device) -> str:
    """`train.amp` (auto|bf16|fp16|off) on `device` → 'bf16', 'fp16' or 'fp32' (see the module's table)."""
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError(f"train.amp: expected one of auto, bf16, fp16, off, got {mode!r}")
    autocasts = device.type in ("cuda", "cpu")
    if mode in ("bf16", "fp16"):
        return mode if autocasts else "fp32"
    if mode == "off":
        return "fp32"
    if device.type == "cuda":
        return "bf16" if _cuda_has_bf16(device) else "fp16"
    return "bf16" if device.type == "cpu" and cpu_bf16_counts_as_native() else "fp32"


def precision_of(amp: bool | str) -> str:
    """A precision name from what older call sites pass: True = bf16, False = fp32."""
    if isinstance(amp, str):
        if amp not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {amp!r}")
        return amp
    return "bf16" if amp else "fp32"


def autocast(device: torch.device, precision: bool | str):
    """Autocast to the half precision named (bf16 or fp16) on CUDA or CPU; a no-op for fp32 or elsewhere."""
    precision = precision_of(precision)
    if precision != "fp32" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=_DTYPES[precision])
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> "torch.amp.GradScaler | None":
    """fp16's loss scaler (its small range underflows small gradients otherwise); None for bf16 and fp32."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


@dataclass(frozen=True)
class Runtime:
    """Where and how one run computes. Build it with `Runtime.resolve(cfg)` (or by hand in a notebook)."""

    device: torch.device
    precision: str = "fp32"  # bf16 | fp16 | fp32
    threads: int = 0  # CPU threads (0: every core)
    engine: str = "torch"  # what extracts a frozen backbone's features (engines.py)
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def resolve(cls, cfg, *, device: torch.device | None = None) -> "Runtime":
        """The runtime an experiment configuration asks for, on `device` (default: cfg.device resolved)."""
        tc = cfg.train
        device = device if device is not None else resolve_device(cfg.device)
        return cls(device=device, precision=resolve_precision(tc.amp, device), threads=tc.threads,
                   engine=resolve_engine(tc.engine, device),
                   channels_last=tc.channels_last and device.type in ("cuda", "cpu"), compile=tc.compile)

    @property
    def amp(self) -> bool:
        """Whether a half precision autocasts (bf16 or fp16)."""
        return self.precision != "fp32"

    def grad_scaler(self):
        return grad_scaler(self.device, self.precision)

    @staticmethod
    def seed(seed: int) -> None:
        """Seed Python, NumPy and torch (every device): same seed, same runtime → same run."""
        seed_everything(seed)

    def take_cores(self) -> None:
        """On the CPU: this run's share of the cores (train.threads), and large activations reuse freed memory."""
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads(self.threads))
            keep_freed_memory()  # training/allocator.py

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.preserve_format
