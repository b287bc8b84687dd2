"""Named moments at which a test (or benchmarks/faults.py) can kill cnnlab for real: failpoints.

A failpoint costs one dictionary lookup when unset. With `CNNLAB_FAILPOINT=PATTERN@N`, the N-th
time any process of the run reaches a moment whose name matches PATTERN (fnmatch), the whole
process group is killed with SIGKILL — the parent and every seed's worker at once, as a power
cut, the OOM killer's `kill -9` of a job or a closed terminal would. The count is shared by the
processes through `$CNNLAB_FAILPOINT_COUNT` (a file; one byte appended per hit, under a lock).

The moments (their names):
    write FOLDER/FILE    a file written atomically (fileio.py), after its bytes are on disk and
                         before it takes the target's name: `write seed-2/checkpoint.pt`,
                         `write features/<key>.safetensors`, `write splits/<kind>-<key>.npz`
    seed S phase K start seed S starting phase K (from 0): freezing, its optimizer, its data
    seed S epoch E end   seed S's epoch E trained and validated, before its checkpoint is written

Only the tests and the fault benchmark set these variables; the kill is a real one, so what
they check is what a user's interrupted run leaves on disk.
"""
from __future__ import annotations

import fnmatch
import os
import signal

ENV, COUNT_ENV = "CNNLAB_FAILPOINT", "CNNLAB_FAILPOINT_COUNT"


def failpoint(moment: str) -> None:
    """Kill the process group here if `$CNNLAB_FAILPOINT` names this moment's turn."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    pattern, _, nth = spec.rpartition("@")
    if not fnmatch.fnmatchcase(moment, pattern):
        return
    if _count_hit() == int(nth):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _count_hit() -> int:
    """This hit's number among every process's hits of the pattern (1, 2, ...)."""
    import fcntl

    path = os.environ.get(COUNT_ENV)
    if not path:
        raise RuntimeError(f"${ENV} is set but ${COUNT_ENV} (the shared hit counter's file) is not")
    with open(path, "ab+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(b".")
        handle.flush()
        return os.fstat(handle.fileno()).st_size
