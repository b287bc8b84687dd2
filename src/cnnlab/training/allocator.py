"""Keep freed memory in the process on Linux (glibc), so a CNN's large activations on the CPU
do not page-fault their way back in every batch.

glibc's malloc serves every block above its mmap threshold (at most 32 MB) with a fresh mmap
and returns it to the kernel on free. A CNN at 224 px has activations of 50–100 MB (Lite0's
first layer, 64 images: 103 MB), so every layer of every batch maps new pages, the kernel
zeroes each 4 KiB page on first touch, and the CPU spends as long in the kernel as in the
convolutions. Measured on the 2-core EPYC (median steady-state step, `benchmarks/allocator.py`):
EfficientNet-Lite0 inference on 64 images at 224 px 2.77 s → 0.98 s, a training step on 32
images 2.16 s → 1.46 s; BaseNet++ evaluating 1,000 images 3.41 s → 2.04 s, its training step
(batch 64) 1.06× faster; small models (BaseNet, cifar_recipe) about unchanged. PyTorch's CPU tuning guide gets the same by preloading jemalloc or
tcmalloc; mallopt needs no extra library: no blocks from mmap (M_MMAP_MAX = 0) and no trimming
of the heap (M_TRIM_THRESHOLD = -1), so freed blocks are reused. The cost: the process keeps its
peak memory until it exits, which a training or prediction process reaches again every batch.
Set CNNLAB_MALLOC=system to leave glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above, once per process; False where it does not apply or is refused."""
    if os.environ.get("CNNLAB_MALLOC", "").lower() == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    except (OSError, AttributeError):
        return False
