"""The engine tests (tests/engines_cases.py), in a pytest process of their own.

oneTBB, OpenVINO's thread pool, does not support fork() while its threads run: a test process that had
run OpenVINO crashed (SIGSEGV) now and then in a later test that started a subprocess, never when run
alone or under gdb. cnnlab itself starts its decoding workers from a forkserver once OpenVINO runs
(engines.py); the suite keeps OpenVINO out of its own process by running these cases in a
fresh interpreter (a forked child would inherit PyTorch's OpenMP pool and hang instead).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("engines_cases.py")


def test_engine_cases_pass_in_a_process_of_their_own(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES),
                           "--basetemp", str(tmp_path / "cases")], capture_output=True, text=True, timeout=1200,
                          cwd=CASES.parent.parent, env={**os.environ})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout.splitlines()[-1]
