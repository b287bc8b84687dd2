"""Inference runtimes ("engines"): a frozen module run by PyTorch, OpenVINO or ONNX Runtime, one call signature.

They live below both of their users — feature extraction in training (`train.engine`, `run --engine`)
and prediction in inference (`predict`, `serve`, exported graphs: `--engine` there) — in one table,
`ENGINES_TABLE`: adding an engine is one entry (its package, its extra, a function that runs an ONNX
graph) and its name in `config.ENGINES` (the configuration's choices; a test checks the two agree).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cnnlab.config import ENGINES
from cnnlab.errors import ConfigError

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Engine:
    """One inference runtime: what it needs installed, and how it runs an ONNX graph."""

    name: str
    package: str | None  # the Python package it needs (None: PyTorch itself)
    extra: str | None  # the cnnlab extra that installs it
    runs_graph: Callable[..., Forward] | None  # (graph, precision=) → forward; None: the module runs as it is
    description: str


def installed(engine: str) -> bool:
    package = ENGINES_TABLE[engine].package
    if package is None:
        return True
    try:
        importlib.import_module(package)
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
            entry = ENGINES_TABLE[engine]
            raise ConfigError(f"engine '{engine}' needs the optional extra: pip install 'cnnlab[{entry.extra}]' "
                              f"(PyPI: {entry.package})")
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


def onnxruntime_forward(graph: bytes | str | Path, *, precision: str = "fp32") -> Forward:
    """ONNX Runtime's CPU session (fp32: `precision` is the graph's own)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _threads()  # the cores cnnlab was given, not every core of the machine
    source = graph if isinstance(graph, bytes) else str(graph)
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: _numpy(x)})[0])

    return forward


def openvino_forward(graph: bytes | str | Path, *, precision: str = "fp32") -> Forward:
    import openvino  # from here on data/streaming.py starts decoding workers from a forkserver (oneTBB and fork)

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
    """An ONNX graph (bytes or a file; an OpenVINO .xml too) run by `engine` (one that runs graphs)."""
    entry = ENGINES_TABLE.get(engine)
    if entry is None or entry.runs_graph is None:
        runners = [e.name for e in ENGINES_TABLE.values() if e.runs_graph is not None]
        raise ConfigError(f"engine '{engine}' does not run exported graphs; use {' or '.join(runners)}")
    return entry.runs_graph(graph, precision=precision)


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
    for entry in ENGINES_TABLE.values():
        if entry.package is None:
            continue
        try:
            versions[entry.name] = importlib.import_module(entry.package).__version__
        except ImportError:
            continue
    return versions


# The table: fastest first on a CPU (benchmarks/engines.py), which is what `auto` takes (PREFERENCE).
ENGINES_TABLE = {e.name: e for e in (
    Engine("torch", None, None, None, "PyTorch runs the module itself (any device)"),
    Engine("openvino", "openvino", "fast", openvino_forward, "OpenVINO on the CPU, the module exported to ONNX once"),
    Engine("onnxruntime", "onnxruntime", "fast", onnxruntime_forward, "ONNX Runtime on the CPU, the module exported "
                                                                      "to ONNX once"),
)}
PREFERENCE = ("openvino", "onnxruntime")
