"""`cnnlab export RUN_DIR --format onnx`: the trained model as ONNX, checked against PyTorch.

The graph takes a dynamic batch of float NCHW images already preprocessed (scaled to [0, 1]
and normalised), or with `uint8_input` raw uint8 NHWC pixels at the input size, the
preprocessing then inside the graph. Class names and preprocessing go into the ONNX
metadata. After writing, onnxruntime runs the file on real test images of the run (random
ones if its data cannot be read) at batch sizes 1 and 5, and the largest difference from
PyTorch's output must stay below `tolerance`.
"""
from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError, RunError
from cnnlab.fileio import atomic_write_bytes
from cnnlab.inference.trained import TrainedModel, run_data

Log = Callable[[str], None]


class WithPreprocessing(nn.Module):
    """uint8 NHWC pixels → logits: scaling and normalisation inside the graph."""

    def __init__(self, trained: TrainedModel):
        super().__init__()
        self.model = trained.model
        mean = torch.tensor(trained.mean or [0.0, 0.0, 0.0]).view(1, -1, 1, 1)
        std = torch.tensor(trained.std or [1.0, 1.0, 1.0]).view(1, -1, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        return self.model((x - self.mean) / self.std)


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export needs the optional extra: pip install 'cnnlab[export]' "
                          "(onnx and onnxruntime)") from None
    return onnx, onnxruntime


def sample_images(trained: TrainedModel, count: int, log: Log) -> tuple[torch.Tensor, str]:
    """uint8 NCHW test images of the run (its recorded data), or random pixels when unreadable."""
    try:
        splits = run_data(trained)
        images, _ = next(iter(splits.test.batches(count)))
        return images.cpu(), f"{len(images)} test images of {splits.description}"
    except (CnnlabError, OSError, StopIteration) as exc:
        log(f"export check: the run's data cannot be read ({exc}); checking on random pixels instead")
        generator = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (count, *trained.input_size), generator=generator, dtype=torch.uint8), \
            "random pixels"


def export_onnx(trained: TrainedModel, out: Path, *, uint8_input: bool = False, opset: int = 17,
                tolerance: float = 1e-4, log: Log = print) -> dict:
    """Write `out`, check it with onnxruntime, and return the figures of the check."""
    onnx, onnxruntime = _onnx_modules()
    if out.exists():
        raise RunError(f"{out}: already exists; cnnlab does not overwrite files: choose another --out")
    trained.model.to("cpu").eval()
    trained.device = torch.device("cpu")
    channels, height, width = trained.input_size
    module: nn.Module = WithPreprocessing(trained).eval() if uint8_input else trained.model
    example = (torch.zeros(2, height, width, channels, dtype=torch.uint8) if uint8_input
               else torch.zeros(2, channels, height, width))
    tick = time.perf_counter()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer warns that 'same' padding is computed from the (fixed) image size: true, and intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (example,), buffer, input_names=["pixels" if uint8_input else "images"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"pixels" if uint8_input else "images": {0: "batch"}, "logits": {0: "batch"}})
    graph = onnx.load_from_string(buffer.getvalue())
    metadata = {"class_names": json.dumps(trained.class_names), "model": trained.record["model"],
                "input": ("uint8 NHWC pixels, 0..255, RGB" if uint8_input else
                          "float32 NCHW RGB scaled to [0, 1], then (x - mean) / std"),
                "input_size": json.dumps(trained.input_size), "resize": trained.record.get("resize", "stretch"),
                "crop_ratio": str(trained.record.get("crop_ratio", 0.875)),
                "interpolation": trained.record.get("interpolation", "bilinear"),
                "mean": json.dumps(trained.mean), "std": json.dumps(trained.std), "output": "logits (softmax: probabilities)"}
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_bytes(out, graph.SerializeToString())
    export_s = time.perf_counter() - tick

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images, what = sample_images(trained, 5, log)
    differences = {}
    for batch in (1, len(images)):
        pixels = images[:batch]
        with torch.no_grad():
            expected = trained.model(trained.preprocess(pixels)).numpy()
        feed = pixels.permute(0, 2, 3, 1).contiguous().numpy() if uint8_input else trained.preprocess(pixels).numpy()
        (got,) = session.run(None, {session.get_inputs()[0].name: feed})
        differences[batch] = float(np.abs(got - expected).max())
    worst = max(differences.values())
    report = {"path": str(out), "export_s": export_s, "checked_on": what, "max_abs_diff": differences,
              "tolerance": tolerance, "uint8_input": uint8_input, "opset": opset}
    log(f"exported {out} in {export_s:.1f}s; onnxruntime vs PyTorch on {what}: max |Δ logits| "
        + ", ".join(f"{d:.2e} (batch {b})" for b, d in differences.items()))
    if worst > tolerance:
        raise RunError(f"{out}: onnxruntime's outputs differ from PyTorch's by {worst:.2e} (> {tolerance:g}); "
                       "the file is kept for inspection")
    return report
