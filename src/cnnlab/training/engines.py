"""Inference engines: a frozen module run by PyTorch, OpenVINO or ONNX Runtime, one call signature.

PyTorch's CPU path for depthwise convolutions (EfficientNet, MobileNet) is several times slower
than the same cores allow; OpenVINO and ONNX Runtime fuse and vectorise them. A frozen module (a
backbone whose features are extracted, a trained model that predicts) is exported once to ONNX
(dynamic batch) and handed to the engine; the result is a callable `float NCHW tensor → tensor`,
so callers never ask which engine runs. `auto` takes the fastest one installed for the device:
OpenVINO, then ONNX Runtime, on a CPU; PyTorch on CUDA/MPS (or when neither is installed), so the
default gets faster with `pip install 'cnnlab[fast]'` and works without it. `$CNNLAB_ENGINE`
names what `auto` means (the test suite sets `torch`, and tests the engines by name).

Precision is fp32 unless `bf16` is asked for; OpenVINO is told so explicitly
(`INFERENCE_PRECISION_HINT`), since on CPUs with native bf16 it would otherwise drop to bf16 on its
own, and its outputs would no longer be PyTorch's within 1e-4.
"""
from __future__ import annotations

import importlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cnnlab.config import ENGINES
from cnnlab.errors import ConfigError

Forward = Callable[[torch.Tensor], torch.Tensor]
# engine → (Python package, the extra that installs it)
PACKAGES = {"openvino": ("openvino", "fast"), "onnxruntime": ("onnxruntime", "fast")}
PREFERENCE = ("openvino", "onnxruntime")  # fastest first, on a CPU (benchmarks/engines.py)


def installed(engine: str) -> bool:
    if engine == "torch":
        return True
    try:
        importlib.import_module(PACKAGES[engine][0])
    except ImportError:
        return False
    return True


def resolve_engine(engine: str, device: torch.device) -> str:
    """The engine `engine` names on `device`: auto → the fastest installed; a named one must be installed."""
    if engine not in ENGINES:
        raise ConfigError(f"engine '{engine}': expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        wanted = os.environ.get("CNNLAB_ENGINE", "auto")
        if wanted != "auto":
            return resolve_engine(wanted, device)
        if device.type != "cpu":
            return "torch"
        return next((e for e in PREFERENCE if installed(e)), "torch")
    if engine != "torch":
        if device.type != "cpu":
            raise ConfigError(f"engine '{engine}' runs on the CPU; on {device.type} use --engine torch (or auto)")
        if not installed(engine):
            package, extra = PACKAGES[engine]
            raise ConfigError(f"engine '{engine}' needs the optional extra: pip install 'cnnlab[{extra}]' "
                              f"(PyPI: {package})")
    return engine


def onnx_bytes(module: nn.Module, example: torch.Tensor, *, opset: int = 17) -> bytes:
    """`module` as an ONNX graph with a dynamic batch axis (the legacy exporter: no onnxscript needed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer warns that 'same' padding is computed from the (fixed) image size: true, and intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad():
            torch.onnx.export(module.eval(), (example,), buffer, input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return buffer.getvalue()


def _threads() -> int:
    return max(1, torch.get_num_threads())


def onnxruntime_forward(graph: bytes | str | Path) -> Forward:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _threads()  # the cores cnnlab was given, not every core of the machine
    source = graph if isinstance(graph, bytes) else str(graph)
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: _numpy(x)})[0])

    return forward


def _no_fork_after_openvino() -> None:
    """oneTBB (OpenVINO's thread pool) does not support fork() while its threads run: a process that had
    run OpenVINO crashed (SIGSEGV) now and then when it later forked (a test suite, a benchmark; never
    under gdb: a race). From now on decoding workers start from a forkserver (clean), and subprocesses
    use fork + exec rather than vfork."""
    import subprocess

    from cnnlab.data import streaming

    streaming.WORKER_START[0] = "forkserver"
    if hasattr(subprocess, "_USE_VFORK"):
        subprocess._USE_VFORK = False


def openvino_forward(graph: bytes | str | Path, *, precision: str = "fp32") -> Forward:
    import openvino

    _no_fork_after_openvino()

    core = openvino.Core()
    if isinstance(graph, bytes):
        with tempfile.TemporaryDirectory() as folder:  # OpenVINO reads an ONNX graph from a file
            path = Path(folder) / "model.onnx"
            path.write_bytes(graph)
            model = core.read_model(str(path))
    else:
        model = core.read_model(str(graph))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                                 "INFERENCE_NUM_THREADS": _threads(), "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(request.infer({0: _numpy(x)})[0], copy=True))

    return forward


def _numpy(x: torch.Tensor) -> np.ndarray:
    array = x.detach().cpu()
    if array.dtype not in (torch.float32, torch.uint8):
        array = array.float()
    return array.contiguous().numpy()


def run_graph(graph: bytes | str | Path, engine: str, *, precision: str = "fp32") -> Forward:
    """An ONNX graph (bytes or a file; an OpenVINO .xml too) run by `engine` (openvino or onnxruntime)."""
    if engine == "openvino":
        return openvino_forward(graph, precision=precision)
    if engine == "onnxruntime":
        return onnxruntime_forward(graph)
    raise ConfigError(f"engine '{engine}' does not run exported graphs; use openvino or onnxruntime")


class _Call(nn.Module):
    """A module's method as its forward (`model.forward_features` exported on its own); the module is a
    child, so the tracer sees its tensors as parameters, not constants."""

    def __init__(self, owner: nn.Module, method: str):
        super().__init__()
        self.owner, self.method = owner, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.owner, self.method)(x)


def compile_module(module: nn.Module | Callable, example: torch.Tensor, engine: str, *,
                   precision: str = "fp32") -> Forward:
    """`module` (or a bound method of one, e.g. `model.forward_features`) as a callable on `engine`.

    `example` is a float batch of the input's shape (its batch size is free)."""
    if engine == "torch":
        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x)
        return forward
    wrapped = module if isinstance(module, nn.Module) else _Call(module.__self__, module.__name__)
    graph = onnx_bytes(wrapped, example[:2].detach().cpu().float().contiguous())
    return run_graph(graph, engine, precision=precision)


def engine_versions() -> dict[str, str]:
    """The installed engines' versions (what a run records beside the engine it used)."""
    versions = {"torch": torch.__version__}
    for engine, (package, _) in PACKAGES.items():
        try:
            versions[engine] = importlib.import_module(package).__version__
        except ImportError:
            continue
    return versions
