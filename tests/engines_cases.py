"""Inference engines (OpenVINO, ONNX Runtime) against PyTorch, exported graphs, int8 export.

Run by tests/test_engines.py in a pytest process of their own (see there why); `python -m pytest
tests/engines_cases.py` runs them directly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnlab.config import load_experiment
from cnnlab.errors import ConfigError, RunError
from cnnlab.inference import load_trained
from cnnlab.inference.predict import predict
from cnnlab.models import create_model
from cnnlab.studies import run_experiment
from cnnlab.engines import compile_module, resolve_engine

# this process runs OpenVINO, whose thread pool does not survive vfork(): subprocesses fork + exec here (see
# cnnlab/cli/main.py, which does the same for cnnlab's own processes)
import subprocess  # noqa: E402

subprocess._USE_VFORK = False

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
ENGINES = ["openvino", "onnxruntime"]
CPU = torch.device("cpu")


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, size", [("basenet", 32), ("basenet_pp", 32), ("birdnet_v1", 64)])
def test_an_engine_computes_what_pytorch_computes(engine, name, size):
    kwargs = {"backbone": "efficientnet_lite0", "weights": "none"} if name.startswith("birdnet") else {}
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, image_size=size, **kwargs).eval()
    x = torch.randn(7, 3, size, size)
    with torch.no_grad():
        expected, features = model(x), model.forward_features(x)
    assert _relative_error(compile_module(model, x, engine)(x), expected) < 1e-4
    assert _relative_error(compile_module(model.forward_features, x, engine)(x), features) < 1e-4
    assert compile_module(model, x, engine)(x[:1]).shape == (1, 5)  # the batch axis is free



def test_a_backbone_is_compiled_once_for_every_split_and_again_when_its_weights_change(monkeypatch):
    """Exporting and compiling takes ~2 s: a run's three splits, and a probe's seeds on one backbone, reuse one
    compiled network; another backbone's tensors are another network (never stale features)."""
    from cnnlab.training import features

    compiled = []
    real = features.compile_module
    monkeypatch.setattr(features, "compile_module", lambda *a, **k: compiled.append(a[2]) or real(*a, **k))
    monkeypatch.setattr(features, "_COMPILED", type(features._COMPILED)())
    torch.manual_seed(0)
    model = create_model("birdnet_v1", num_classes=5, image_size=64, backbone="efficientnet_lite0",
                         weights="none").eval()
    x = torch.randn(6, 3, 64, 64)
    first = features.compiled_features(model, x, "onnxruntime")
    twin = create_model("birdnet_v1", num_classes=5, image_size=64, backbone="efficientnet_lite0", weights="none")
    twin.load_state_dict(model.state_dict())  # another object, the same tensors: the same network
    assert features.compiled_features(twin.eval(), x[:2], "onnxruntime") is first and compiled == ["onnxruntime"]
    with torch.no_grad():
        next(model.backbone.parameters()).add_(0.5)
        expected = model.forward_features(x)
    again = features.compiled_features(model, x, "onnxruntime")
    assert again is not first and len(compiled) == 2
    assert _relative_error(again(x), expected) < 1e-4

def test_auto_takes_the_fastest_installed_and_a_missing_engine_names_its_extra(monkeypatch):
    import cnnlab.engines as engines

    monkeypatch.delenv("CNNLAB_ENGINE")
    assert resolve_engine("auto", CPU) == "openvino"
    assert resolve_engine("auto", torch.device("cuda")) == "torch"
    monkeypatch.setattr(engines, "installed", lambda e: e in ("torch", "onnxruntime"))
    assert resolve_engine("auto", CPU) == "onnxruntime"
    monkeypatch.setattr(engines, "installed", lambda e: e == "torch")
    assert resolve_engine("auto", CPU) == "torch"
    with pytest.raises(ConfigError, match=r"engine 'openvino' needs the optional extra: pip install 'cnnlab\[fast\]'"):
        resolve_engine("openvino", CPU)
    with pytest.raises(ConfigError, match="expected one of auto, torch, openvino, onnxruntime"):
        resolve_engine("tensorrt", CPU)


def test_a_missing_engine_is_one_line_before_any_folder(npz_data, tmp_path, capsys, monkeypatch):
    from cnnlab.cli.main import main
    import cnnlab.engines as engines

    monkeypatch.setattr(engines, "installed", lambda e: e == "torch")
    code = main(["run", "birdnet_v0", "--engine", "openvino", "--data", str(npz_data), "--out", str(tmp_path / "r")])
    assert code == 2 and "pip install 'cnnlab[fast]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _bird_run(birds_lab, tmp_path, engine: str, folder: str):
    cfg = load_experiment("birdnet_v0", overrides={
        "data.path": str(birds_lab), "data.image_size": 64, "data.workers": 0, "device": "cpu",
        "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none", "train.batch_size": 4,
        "train.phases.0.epochs": 3, "train.feature_cache_dir": str(tmp_path / "fc"), "seeds": [1],
        "train.engine": engine, "out": str(tmp_path / folder)})
    return run_experiment(cfg, progress=False, log=lambda s: None)


def test_features_extracted_by_openvino_train_to_the_test_accuracy_of_pytorchs(birds_lab, tmp_path):
    runs = {engine: _bird_run(birds_lab, tmp_path, engine, engine) for engine in ("torch", "openvino")}
    results = {e: json.loads((f / "seed-1" / "results.json").read_text()) for e, f in runs.items()}
    assert results["openvino"]["engine"] == "openvino" and results["torch"]["engine"] == "torch"
    assert abs(results["openvino"]["test_acc"] - results["torch"]["test_acc"]) * 6 <= 1 + 1e-9  # within one image
    cached = sorted((tmp_path / "fc").glob("*.safetensors"))
    assert len(cached) == 6  # train, val and test of each engine: another engine is another cache entry
    from safetensors.torch import load_file

    by_split = {}
    for path in cached:
        stored = load_file(str(path))
        by_split.setdefault((stored["features"].shape, stored["labels"].numpy().tobytes()), []).append(
            stored["features"].float())
    assert len(by_split) == 3
    for a, b in by_split.values():
        assert _relative_error(a, b) < 1e-3  # float16 storage of nearly equal features


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("openvino", ".xml")])
def test_an_exported_graph_predicts_what_the_run_predicts(fmt, suffix, npz_data, tmp_path):
    from cnnlab.inference.export import export_model
    from PIL import Image

    cfg = load_experiment("basenet_pp", overrides={"data.path": str(npz_data), "train.epochs": 1, "seeds": [1],
                                                   "train.tta": "flip_shift", "device": "cpu",
                                                   "out": str(tmp_path / "runs")})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    images = np.load(npz_data / "test.npz")["images"][:6]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    expected, _ = predict([load_trained(folder)], paths, workers=0, progress=False)
    for uint8 in (False, True):
        out = tmp_path / f"m{'-u8' if uint8 else ''}{suffix}"
        report = export_model(load_trained(folder), out, fmt=fmt, uint8_input=uint8, log=lambda s: None)
        assert max(report["max_abs_diff"].values()) < 1e-4 and report["tta"] == "flip_shift"
        graph = load_trained(out, engine="auto")
        assert graph.model is None and graph.tta == "flip_shift" and graph.class_names == load_trained(folder).class_names
        got, _ = predict([graph], paths, workers=0, progress=False)
        for a, b in zip(got, expected):  # the test-time views are applied around the graph, as the run tested
            assert torch.allclose(a.probabilities, b.probabilities, atol=1e-5)
    with pytest.raises(RunError, match="already exists"):
        export_model(load_trained(folder), out, fmt=fmt, log=lambda s: None)


def test_int8_agrees_with_fp32_and_is_calibrated_on_training_images_only(birds_lab, tmp_path, monkeypatch):
    from cnnlab.inference import export

    folder = _bird_run(birds_lab, tmp_path, "torch", "runs")
    trained = load_trained(folder)
    seen = {}
    original = export.calibration_images

    def spy(trained, count, seed=0):
        images, what = original(trained, count, seed)
        seen["images"] = images
        return images, what

    monkeypatch.setattr(export, "calibration_images", spy)
    lines = []
    report = export.export_model(trained, tmp_path / "m8.onnx", int8=True, calibration=50, log=lines.append)
    assert report["calibration_split"] == "train"
    # what is compared is said: the speed of both graphs on ONNX Runtime, and the int8 logits' distance as
    # expected for int8, judged by agreement (the 1e-4 bound is fp32's)
    speed = next(line for line in lines if line.startswith("int8 on the run's"))
    assert "img/s int8 against" in speed and "both graphs on ONNX Runtime" in speed
    check = next(line for line in lines if "int8 graph vs PyTorch fp32" in line)
    assert "same top-1 class for" in check and "expected for int8" in check
    assert 0 <= report["top1_agreement"] <= 1
    splits = export.run_data(trained)
    train = torch.cat([b for b, _ in splits.train.batches(64)])
    test = torch.cat([b for b, _ in splits.test.batches(64)])
    for image in seen["images"]:  # every calibration image is a training image, none a test image
        assert any(torch.equal(image, t) for t in train) and not any(torch.equal(image, t) for t in test)
    figures = report["test"]
    assert figures["int8"]["agreement_with_fp32"] >= 0.95
    assert figures["fp32"]["test_acc"] == pytest.approx(report["test"]["fp32"]["test_acc"])
    graph = load_trained(tmp_path / "m8.onnx", engine="onnxruntime")
    assert graph.engine == "onnxruntime" and graph.class_names == trained.class_names


def test_int8_that_loses_too_much_is_refused_in_one_line_and_writes_nothing(birds_lab, tmp_path, monkeypatch):
    from cnnlab.inference import export

    folder = _bird_run(birds_lab, tmp_path, "torch", "runs")
    real = export.compare_on_test

    def worse(*args, **kwargs):
        figures = real(*args, **kwargs)
        figures["int8"]["test_acc"] = figures["fp32"]["test_acc"] - 0.05
        return figures

    monkeypatch.setattr(export, "compare_on_test", worse)
    with pytest.raises(RunError, match=r"int8 loses 5\.00 points of test accuracy \(> --int8-tolerance 1\)"):
        export.export_model(load_trained(folder), tmp_path / "m8.onnx", int8=True, calibration=20, log=lambda s: None)
    assert not (tmp_path / "m8.onnx").exists()
    export.export_model(load_trained(folder), tmp_path / "m8.onnx", int8=True, calibration=20, force=True,
                        log=lambda s: None)
    assert (tmp_path / "m8.onnx").is_file()


def test_predict_on_an_engine_equals_predict_on_torch(npz_data, tmp_path, capsys):
    from cnnlab.cli.main import main
    from PIL import Image

    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 1, "seeds": [1],
                                                "device": "cpu", "out": str(tmp_path / "runs")})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    for i, image in enumerate(np.load(npz_data / "test.npz")["images"][:5]):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    rows = {}
    for engine in ("torch", "openvino", "onnxruntime"):
        out = tmp_path / f"{engine}.csv"
        assert main(["predict", str(folder), *[str(tmp_path / f"{i}.png") for i in range(5)], "--engine", engine,
                     "--out", str(out), "--workers", "0", "--no-progress"]) == 0
        assert f"on {engine}" in capsys.readouterr().out
        rows[engine] = [line.split(",") for line in out.read_text().splitlines()[1:]]
    for engine in ("openvino", "onnxruntime"):
        for a, b in zip(rows[engine], rows["torch"]):
            assert a[1] == b[1] and abs(float(a[2]) - float(b[2])) < 1e-5

