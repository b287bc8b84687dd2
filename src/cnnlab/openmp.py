"""How cnnlab's own processes ask OpenMP to wait: a short spin, then sleep.

PyTorch's OpenMP threads (libgomp on Linux) spin for a long while when they wait for work, so
two jobs sharing the cores burn them spinning: two BaseNet runs on 2 cores each went 4-28×
slower. A short spin (1,000 rounds, then sleep) keeps a lone run within about 5 % of full
spinning and two at once at 2.3× (sleeping at once, OMP_WAIT_POLICY=PASSIVE: 1.9×, but 14 %
slower alone); README "Seeds together, and threads".

The OpenMP runtime reads the variable once, when torch loads, so it must be in the environment
before. `import cnnlab` changes nothing in the importing process (a notebook's kernel is the user's):
only the command line (`cli/main.py`, before any command imports torch) and the seed processes
cnnlab spawns (`studies/parallel.py`, for the moment the pool starts them) set it. A user's
OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
"""
from __future__ import annotations

import contextlib
import os

SHORT_SPIN = {"GOMP_SPINCOUNT": "1000"}


def wants_short_spin(environ=os.environ) -> bool:
    return "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ


def use_short_spin() -> None:
    """In a process cnnlab owns (the command line): set the short spin, unless the user chose a policy."""
    if wants_short_spin():
        os.environ.update(SHORT_SPIN)


@contextlib.contextmanager
def short_spin_for_children():
    """While processes are spawned inside it, they inherit the short spin; the environment is put back after."""
    if not wants_short_spin():
        yield
        return
    os.environ.update(SHORT_SPIN)
    try:
        yield
    finally:
        for key in SHORT_SPIN:
            os.environ.pop(key, None)
