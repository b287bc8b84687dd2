"""An exported graph (`cnnlab export`: .onnx, or OpenVINO's .xml + .bin): its record and its engine.

Export writes the run's inference record (classes, input size, resize, interpolation, mean/std,
test-time views, whether the graph takes uint8 pixels) into the graph's metadata, so `cnnlab
predict model.onnx ...` and `cnnlab serve model.onnx` read it back and predict as the run did,
with no PyTorch model and no run folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from cnnlab.inference.record import check_record
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.engines import Forward, installed, resolve_engine, run_graph

RECORD_KEY = "cnnlab_record"  # the metadata entry holding the whole record, as JSON


def read_record(path: Path) -> dict:
    """The inference record an exported graph carries."""
    try:
        if path.suffix.lower() == ".xml":
            import openvino

            model = openvino.Core().read_model(str(path))
            text = model.get_rt_info([RECORD_KEY]).astype(str) if model.has_rt_info([RECORD_KEY]) else None
        else:
            if installed("onnxruntime"):
                import onnxruntime

                session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                text = session.get_modelmeta().custom_metadata_map.get(RECORD_KEY)
            else:
                import onnx

                graph = onnx.load(str(path), load_external_data=False)
                text = next((p.value for p in graph.metadata_props if p.key == RECORD_KEY), None)
    except ImportError:
        raise ConfigError(f"{path}: reading an exported graph needs onnxruntime or openvino: "
                          "pip install 'cnnlab[fast]'") from None
    except Exception as exc:  # the libraries' parse errors: the file is not a graph they can read
        raise CheckpointError(f"{path}: not a readable {'OpenVINO' if path.suffix == '.xml' else 'ONNX'} model "
                              f"({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None
    if not text:
        raise CheckpointError(f"{path}: holds no cnnlab record (not exported by cnnlab 0.9 or later); "
                              "export it again with `cnnlab export RUN_DIR`")
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: its cnnlab record is not valid JSON ({exc})") from None
    return check_record(record, path)


def graph_engine(path: Path, engine: str = "auto") -> tuple[dict, str, Forward]:
    """(record, engine, forward) of the graph at `path`, run by `engine` (auto: OpenVINO, then ONNX Runtime;
    an .xml: OpenVINO). `load_trained` makes a TrainedModel of them."""
    cpu = torch.device("cpu")
    if engine in ("auto", "torch"):
        if engine == "torch":
            raise ConfigError(f"{path}: an exported graph runs on openvino or onnxruntime, not torch "
                              "(give the run folder to use PyTorch)")
        engine = "openvino" if path.suffix.lower() == ".xml" or installed("openvino") else "onnxruntime"
    if path.suffix.lower() == ".xml" and engine != "openvino":
        raise ConfigError(f"{path}: an OpenVINO model runs on --engine openvino")
    engine = resolve_engine(engine, cpu)
    return read_record(path), engine, run_graph(path, engine)
