"""`cnnlab export RUN_DIR --format onnx|openvino [--int8]`: the trained model as a graph, checked.

The graph takes a dynamic batch of float NCHW images already preprocessed (scaled to [0, 1]
and normalised), or with `uint8_input` raw uint8 NHWC pixels at the input size, the
preprocessing then inside the graph. The run's inference record — class names, preprocessing,
test-time views (`train.tta`, applied by `cnnlab predict` / `serve` around the graph) — goes into
its metadata. Three steps, each a function:

1. `build_graph`: trace the model to ONNX and write the record into it;
2. `quantize_int8` (with `--int8`): static post-training quantisation by ONNX Runtime (QDQ,
   per-channel weights), calibrated on a seeded sample of the run's *training* images — never
   validation or test — then the run's test split is predicted by both graphs: their accuracies,
   top-1 agreement and speed are reported, and int8 is refused when it loses more than
   `int8_tolerance` points of accuracy (unless forced);
3. `check_graph`: the written file, run by its engine on real test images of the run (random ones
   if its data cannot be read) at batch sizes 1 and 5, must match PyTorch within `tolerance`
   (fp32; an int8 graph is judged by its accuracy instead).

`--format openvino` converts the graph to OpenVINO's IR (`model.xml` + `model.bin`), the record in
its runtime info.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError, RunError
from cnnlab.fileio import atomic_write_bytes
from cnnlab.inference.exported import RECORD_KEY
from cnnlab.inference.trained import TrainedModel, load_trained, run_data
from cnnlab.engines import onnx_bytes, resolve_engine, run_graph

Log = Callable[[str], None]
FORMATS = ("onnx", "openvino")
CALIBRATION_IMAGES = 300


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


def _onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the check runs it)
    except ImportError:
        raise ConfigError("ONNX export needs the optional extra: pip install 'cnnlab[export]' "
                          "(onnx and onnxruntime)") from None
    return onnx


def graph_input(trained: TrainedModel, images: torch.Tensor, uint8_input: bool) -> torch.Tensor:
    """uint8 NCHW images → what the graph takes."""
    return images.permute(0, 2, 3, 1).contiguous() if uint8_input else trained.preprocess(images)


def build_graph(trained: TrainedModel, *, uint8_input: bool, opset: int) -> bytes:
    """The model traced to ONNX (dynamic batch), the run's record in its metadata."""
    onnx = _onnx()
    trained.model.to("cpu").eval()
    trained.device = torch.device("cpu")
    channels, height, width = trained.input_size
    module: nn.Module = WithPreprocessing(trained).eval() if uint8_input else trained.model
    example = (torch.zeros(2, height, width, channels, dtype=torch.uint8) if uint8_input
               else torch.zeros(2, channels, height, width))
    graph = onnx.load_from_string(onnx_bytes(module, example, opset=opset))
    record = {**trained.record, "uint8_input": uint8_input}
    metadata = {RECORD_KEY: json.dumps(record), "class_names": json.dumps(trained.class_names),
                "model": trained.record["model"],
                "input": ("uint8 NHWC pixels, 0..255, RGB" if uint8_input else
                          "float32 NCHW RGB scaled to [0, 1], then (x - mean) / std"),
                "input_size": json.dumps(trained.input_size), "resize": trained.record.get("resize", "stretch"),
                "crop_ratio": str(trained.record.get("crop_ratio", 0.875)),
                "interpolation": trained.record.get("interpolation", "bilinear"),
                "mean": json.dumps(trained.mean), "std": json.dumps(trained.std),
                "tta": trained.tta,
                "output": ("logits (probabilities: sigmoid(logits), one per class; a class is present at or above "
                           "its threshold)" if trained.multilabel else
                           "logits (probabilities: softmax(logits / temperature))"),
                "task": "multilabel" if trained.multilabel else "single",
                # the temperature the run fitted on its validation split (1: uncalibrated); cnnlab's runner applies
                # it, and with the conformal and rejection scores of the record, sets and 'unknown' too
                "temperature": str(trained.trust.temperature if trained.trust is not None else 1.0)}
    if trained.multilabel:  # each class's threshold, chosen on the run's validation split
        metadata["thresholds"] = json.dumps(dict(zip(trained.class_names, trained.record["thresholds"])))
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    return graph.SerializeToString()


def calibration_images(trained: TrainedModel, count: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """A seeded sample of the run's training split (uint8 NCHW): the only images calibration sees."""
    splits = run_data(trained)
    train = splits.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count]
    sample = train.subset(order.sort().values)
    images = torch.cat([batch for batch, _ in sample.batches(64)]).cpu()
    return images, f"{len(images)} training images of {splits.description} (seed {seed})"


def quantize_int8(fp32: bytes, trained: TrainedModel, *, uint8_input: bool, count: int, log: Log) -> tuple[bytes, dict]:
    """Static int8 (QDQ) of the fp32 graph, calibrated on training images; (graph, what it saw)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    images, what = calibration_images(trained, count)
    log(f"int8: calibrating on {what}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([graph_input(trained, images[i:i + 32], uint8_input).numpy()
                                 for i in range(0, len(images), 32)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet = logging.getLogger()  # ORT's quantiser logs advice through the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as folder:
            source, ready, target = (Path(folder) / name for name in ("fp32.onnx", "ready.onnx", "int8.onnx"))
            source.write_bytes(fp32)
            quant_pre_process(str(source), str(ready))  # shapes inferred, graph optimised: what ORT advises
            quantize_static(str(ready), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            graph = target.read_bytes()
    finally:
        quiet.setLevel(level)
    return _with_metadata(graph, fp32), {"calibration": what, "calibration_split": "train",
                                         "calibration_images": len(images)}


def _with_metadata(graph: bytes, source: bytes) -> bytes:
    """`graph` with `source`'s metadata (the quantiser drops it)."""
    onnx = _onnx()
    target, origin = onnx.load_from_string(graph), onnx.load_from_string(source)
    present = {p.key for p in target.metadata_props}
    for prop in origin.metadata_props:
        if prop.key not in present:
            entry = target.metadata_props.add()
            entry.key, entry.value = prop.key, prop.value
    return target.SerializeToString()


def compare_on_test(trained: TrainedModel, graphs: dict[str, bytes], *, uint8_input: bool, log: Log) -> dict:
    """Each graph's accuracy on the run's test split, top-1 agreement with fp32, and images/s (a multi-label
    model's: its share of right yes/no decisions at the thresholds, and of decisions equal to fp32's)."""
    splits = run_data(trained)
    if trained.multilabel:
        thresholds = trained.thresholds
        decide = lambda logits: torch.sigmoid(logits) >= thresholds  # noqa: E731
    else:
        decide = lambda logits: logits.argmax(1)  # noqa: E731
    forwards = {name: run_graph(graph, "onnxruntime") for name, graph in graphs.items()}
    predicted = {name: [] for name in graphs}
    labels, speed = [], {name: 0.0 for name in graphs}
    seen = 0
    for images, truth in splits.test.batches(32):
        x = graph_input(trained, images.cpu(), uint8_input)
        for name, forward in forwards.items():
            tick = time.perf_counter()
            predicted[name].append(decide(forward(x)))
            speed[name] += time.perf_counter() - tick
        labels.append(truth.cpu())
        seen += len(images)
    labels = torch.cat(labels)
    out = {"test_images": seen}
    for name in graphs:
        top1 = torch.cat(predicted[name])
        truth = labels > 0.5 if trained.multilabel else labels
        out[name] = {"test_acc": float((top1 == truth).float().mean()), "img_s": seen / max(speed[name], 1e-9),
                     "agreement_with_fp32": float((top1 == torch.cat(predicted["fp32"])).float().mean())}
    return out


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


def check_graph(trained: TrainedModel, out: Path, *, uint8_input: bool, tolerance: float | None, log: Log,
                int8: bool = False) -> dict:
    """The written file, run by its engine, against PyTorch on the run's test images at batch 1 and 5. An fp32
    graph is held to `tolerance` on its logits; an int8 one is not (its logits move by design, often by tenths):
    it is judged by top-1 agreement and test accuracy (compare_on_test), and this check reports its agreement."""
    engine = "openvino" if out.suffix == ".xml" else "onnxruntime"
    graph = load_trained(out, engine=engine)
    images, what = sample_images(trained, 5, log)
    differences, agree = {}, []
    for batch in (1, len(images)):
        pixels = images[:batch]
        with torch.no_grad():
            expected = trained.model(trained.preprocess(pixels)).numpy()
        got = graph.forward(graph_input(trained, pixels, uint8_input)).numpy()
        differences[batch] = float(np.abs(got - expected).max())
        agree += list(got.argmax(1) == expected.argmax(1))
    worst = max(differences.values())
    shown = ", ".join(f"{d:.2e} (batch {b})" for b, d in differences.items())
    if int8:
        log(f"{engine} int8 graph vs PyTorch fp32 on {what}: same top-1 class for {sum(agree)} of {len(agree)}; "
            f"max |Δ logits| {shown} — expected for int8 (the 1e-4 bound holds fp32 exports); int8 is judged by "
            "its agreement and test accuracy above")
    else:
        log(f"{engine} vs PyTorch on {what}: max |Δ logits| {shown} (bound {tolerance:g})" if tolerance is not None
            else f"{engine} vs PyTorch on {what}: max |Δ logits| {shown}")
    if tolerance is not None and worst > tolerance:
        raise RunError(f"{out}: {engine}'s outputs differ from PyTorch's by {worst:.2e} (> {tolerance:g}); "
                       "the file is kept for inspection")
    return {"checked_on": what, "max_abs_diff": differences, "engine": engine,
            "top1_agreement": float(np.mean(agree))}


def _free(path: Path) -> None:
    if path.exists():
        raise RunError(f"{path}: already exists; cnnlab does not overwrite files: choose another --out")


def _write_openvino(graph: bytes, record: dict, out: Path) -> None:
    """The ONNX graph as OpenVINO IR beside `out` (.xml + .bin), both appearing at once."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("--format openvino needs the optional extra: pip install 'cnnlab[fast]' (openvino)") from None
    _free(out.with_suffix(".bin"))
    with tempfile.TemporaryDirectory(dir=out.parent) as folder:
        source = Path(folder) / "model.onnx"
        source.write_bytes(graph)
        model = openvino.convert_model(str(source))
        model.set_rt_info(json.dumps(record), [RECORD_KEY])
        openvino.save_model(model, str(Path(folder) / "model.xml"), compress_to_fp16=False)
        shutil.move(str(Path(folder) / "model.bin"), out.with_suffix(".bin"))
        shutil.move(str(Path(folder) / "model.xml"), out)


def export_model(trained: TrainedModel, out: Path, *, fmt: str = "onnx", uint8_input: bool = False, opset: int = 17,
                 tolerance: float = 1e-4, int8: bool = False, calibration: int = CALIBRATION_IMAGES,
                 int8_tolerance: float = 1.0, force: bool = False, log: Log = print) -> dict:
    """Write `out` (.onnx, or .xml + .bin), check it, and return the figures of the check."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if trained.model is None:
        raise ConfigError(f"{trained.source}: already an exported graph; export from the run folder")
    if calibration < 1 or int8_tolerance < 0:
        raise ConfigError("--calibration: expected a count >= 1; --int8-tolerance: expected points >= 0")
    if fmt == "openvino":
        resolve_engine("openvino", torch.device("cpu"))  # not installed: one line, before any work
    _free(out)
    tick = time.perf_counter()
    graph = build_graph(trained, uint8_input=uint8_input, opset=opset)
    report: dict = {"path": str(out), "format": fmt, "uint8_input": uint8_input, "opset": opset, "int8": int8,
                    "tta": trained.tta}
    if int8:
        quantized, seen = quantize_int8(graph, trained, uint8_input=uint8_input, count=calibration, log=log)
        report.update(seen)
        figures = compare_on_test(trained, {"fp32": graph, "int8": quantized}, uint8_input=uint8_input, log=log)
        report["test"] = figures
        loss = 100 * (figures["fp32"]["test_acc"] - figures["int8"]["test_acc"])
        log(f"int8 on the run's {figures['test_images']} test images: accuracy {100 * figures['int8']['test_acc']:.2f} % "
            f"(fp32 {100 * figures['fp32']['test_acc']:.2f} %), top-1 agreement "
            f"{100 * figures['int8']['agreement_with_fp32']:.2f} %; speed {figures['int8']['img_s']:.1f} img/s int8 "
            f"against {figures['fp32']['img_s']:.1f} img/s fp32, both graphs on ONNX Runtime"
            + (" (before their conversion to OpenVINO IR)" if fmt == "openvino" else ""))
        if loss > int8_tolerance and not force:
            raise RunError(f"int8 loses {loss:.2f} points of test accuracy (> --int8-tolerance {int8_tolerance:g}); "
                           f"nothing written: export fp32 (without --int8), or pass --force to keep the int8 graph")
        graph = quantized
    if fmt == "openvino":
        _write_openvino(graph, {**trained.record, "uint8_input": uint8_input}, out)
    else:
        atomic_write_bytes(out, graph)
    report["export_s"] = time.perf_counter() - tick
    log(f"exported {out} in {report['export_s']:.1f}s")
    report.update(check_graph(trained, out, uint8_input=uint8_input, tolerance=None if int8 else tolerance, log=log,
                              int8=int8))
    report["tolerance"] = None if int8 else tolerance
    return report


def export_onnx(trained: TrainedModel, out: Path, *, uint8_input: bool = False, opset: int = 17,
                tolerance: float = 1e-4, log: Log = print) -> dict:
    """The fp32 ONNX export (the 0.8 call)."""
    return export_model(trained, out, fmt="onnx", uint8_input=uint8_input, opset=opset, tolerance=tolerance, log=log)
