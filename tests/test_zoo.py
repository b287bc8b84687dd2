"""Backbones from the field's zoos (timm, torchvision): every policy, predict, export, Grad-CAM, weights, probe.

timm's own test models (`test_resnet`, `test_convnext`, `test_vit`, `test_efficientnet`: real
architectures of each family at 0.1-0.4 M parameters, 160 px) keep this fast; nothing downloads.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import load_experiment
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.inference import load_trained
from cnnlab.inference.gradcam import gradcam
from cnnlab.inference.predict import predict
from cnnlab.models import create_model
from cnnlab.studies import run_experiment
from cnnlab.training.phases import apply_phase, freeze_for_phase

timm = pytest.importorskip("timm")

FAMILIES = ["timm/test_resnet", "timm/test_convnext", "timm/test_vit", "timm/test_efficientnet",
            "torchvision/mobilenet_v3_small"]


def _overrides(backbone: str, birds_lab: Path, tmp_path: Path, **more) -> dict:
    # torchvision's MobileNet is fully convolutional: 64 px keeps it quick; timm's test models are 160 px
    size = 64 if backbone.startswith("torchvision/") else 0
    return {"data.path": str(birds_lab), "data.image_size": size, "data.workers": 0, "device": "cpu",
            "model_args.backbone": backbone, "model_args.weights": "none", "seeds": [1], "train.batch_size": 4,
            "train.feature_cache_dir": str(tmp_path / "fc"), "out": str(tmp_path / "runs"), **more}


def _one_epoch_phases(name: str) -> dict:
    return {f"train.phases.{i}.epochs": 1 for i in range(len(load_experiment(name).train.phases))}


@pytest.mark.parametrize("backbone", FAMILIES)
def test_every_family_trains_v0_v4_and_the_recipe_then_predicts_exports_and_explains(backbone, birds_lab, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from cnnlab.inference.export import export_onnx

    folders = {}
    for preset in ("birdnet_v0", "birdnet_v4", "birdnet_recipe"):
        cfg = load_experiment(preset, overrides={**_overrides(backbone, birds_lab, tmp_path / preset),
                                                 **_one_epoch_phases(preset)})
        folders[preset] = run_experiment(cfg, progress=False, log=lambda s: None)
        results = json.loads((folders[preset] / "seed-1" / "results.json").read_text())
        assert results["num_test"] == 6 and 0 <= results["test_acc"] <= 1
    v4 = (folders["birdnet_v4"] / "seed-1" / "metrics.csv").read_text()
    assert v4.count("\n") == 3  # header + the warm-up epoch + the unfreeze-14x14 epoch (backbone.stride16 et seq.)

    trained = load_trained(folders["birdnet_v4"])
    paths = [str(p) for p in sorted(birds_lab.glob("*/*.jpg"))[:5]]
    predictions, errors = predict([trained], [Path(p) for p in paths], workers=0, progress=False)
    assert not errors and len(predictions) == 5
    assert torch.allclose(torch.stack([p.probabilities for p in predictions]).sum(1), torch.ones(5), atol=1e-5)

    report = export_onnx(trained, tmp_path / "m.onnx", log=lambda s: None)
    assert max(report["max_abs_diff"].values()) < 1e-4
    assert onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])

    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize(
        trained.input_size[1:][::-1]))).permute(2, 0, 1) for p in paths[:3]])
    maps, explained = gradcam(trained, images)
    assert maps.shape == (3, *trained.input_size[1:]) and torch.isfinite(maps).all() and explained.shape == (3,)
    # The layer explained matters to the score: for some class the map is not blank. (For one class a
    # barely trained network can weigh every place negatively, which ReLU leaves blank.)
    peaks = [float(gradcam(trained, images, target=torch.full((3,), k))[0].max()) for k in range(3)]
    assert max(peaks) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_stride16_and_layer_decay_mean_the_same_place_on_every_family(backbone):
    from cnnlab.config import OptimizerConfig, PhaseConfig, TrainConfig

    model = create_model("birdnet_v4", num_classes=3, backbone=backbone, weights="none", image_size=160)
    aliases = model.part_aliases()
    stages = model.stage_names()
    assert aliases["backbone.stride16"] in stages
    assert aliases["backbone.14x14"] == aliases["backbone.stride16"]
    phase = PhaseConfig(name="ft", epochs=1, trainable=["head", "backbone.stride16"])
    freeze_for_phase(model, phase)
    first = stages.index(aliases["backbone.stride16"])
    for name, param in model.backbone.named_parameters():
        owner = max((i for i, s in enumerate(stages) if f"backbone.{name}".startswith(s + ".")), default=-1)
        if owner > first:
            assert param.requires_grad, name  # every later stage trains
        elif 0 <= owner < first:
            assert not param.requires_grad, name  # every earlier stage stays frozen
    recipe = PhaseConfig(name="ft", epochs=1, trainable=["all"], backbone_lr_decay=0.5)
    optimizer, _, _ = apply_phase(model, recipe, OptimizerConfig(lr=1.0), TrainConfig(), steps_per_epoch=1)
    rates = [g["lr"] for g in optimizer.param_groups if g["name"].startswith("backbone.")]
    assert len(rates) == len(model.backbone_stage_parameters()) >= 4  # one group per stage
    assert rates == sorted(rates) and rates[-1] == 1.0 and rates[-2] == 0.5  # the last stage at lr, decaying down
    covered = sum(len(g["params"]) for g in optimizer.param_groups)
    assert covered == len(list(model.parameters()))  # nothing left out (a ViT's class token, a final norm)


def test_a_vit_gives_its_token_grid_to_a_spatial_head_and_a_pooled_vector_to_a_dense_one():
    v2 = create_model("birdnet_v2", num_classes=3, backbone="timm/test_vit", weights="none", image_size=160)
    grid = v2.forward_features(torch.zeros(2, 3, 160, 160))
    assert grid.shape[-2:] == (10, 10)  # 160 px / patch 16, the class token dropped
    v0 = create_model("birdnet_v0", num_classes=3, backbone="timm/test_vit", weights="none", image_size=160)
    assert v0.forward_features(torch.zeros(2, 3, 160, 160)).shape == (2, v0.backbone.num_features)
    assert v2(torch.zeros(2, 3, 160, 160)).shape == (2, 3)


def test_resume_is_exact_on_a_timm_backbone(birds_lab, tmp_path):
    from cnnlab.studies.resume import resume
    from conftest import interrupt_after

    overrides = {**_overrides("timm/test_convnext", birds_lab, tmp_path), **_one_epoch_phases("birdnet_v4")}
    overrides["train.phases.1.epochs"] = 2
    whole = run_experiment(load_experiment("birdnet_v4", overrides={**overrides, "out": str(tmp_path / "a")}),
                           progress=False, log=lambda s: None)
    from cnnlab.errors import RunInterrupted

    with pytest.raises(RunInterrupted):
        run_experiment(load_experiment("birdnet_v4", overrides={**overrides, "out": str(tmp_path / "b")}),
                       progress=False, log=interrupt_after(2))
    cut = next((tmp_path / "b" / "birdnet_v4").iterdir())
    resume(cut, progress=False, log=lambda s: None)
    a = json.loads((whole / "seed-1" / "results.json").read_text())
    b = json.loads((cut / "seed-1" / "results.json").read_text())
    assert (a["test_loss"], a["test_acc"]) == (b["test_loss"], b["test_acc"])
    assert (whole / "seed-1" / "metrics.csv").read_text().split("\n")[1:] != []
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731 (epoch times differ)
    assert strip((whole / "seed-1" / "metrics.csv").read_text())[:3] == \
        strip((cut / "seed-1" / "metrics.csv").read_text())[:3]


# ----------------------------------------------------------------------------- weights


def _features(model, x):
    with torch.no_grad():
        return model.eval().forward_features(x)


def test_weights_path_from_a_timm_state_dict_and_a_hub_folder_give_identical_features(tmp_path):
    from safetensors.torch import save_file

    source = timm.create_model("test_resnet", pretrained=False, num_classes=10)  # with its own classifier
    torch.nn.init.normal_(source.fc.weight)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "resnet.pth")
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file(state, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({"architecture": "test_resnet", "pretrained_cfg": {
        "input_size": [3, 256, 256], "interpolation": "bicubic", "crop_pct": 0.95, "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25]}}))
    x = torch.randn(2, 3, 160, 160)
    expected = source.eval().forward_head(source.forward_features(x), pre_logits=True)
    for weights in (tmp_path / "resnet.pth", hub):
        model = create_model("birdnet_v0", num_classes=3, backbone="timm/test_resnet", weights=str(weights))
        assert torch.equal(_features(model, x), expected)
    stated = create_model("birdnet_v0", num_classes=3, backbone="timm/test_resnet", weights=str(hub)).preprocessing
    assert (stated.size, stated.interpolation, stated.crop_ratio, stated.mean) == (256, "bicubic", 0.95, (0.5,) * 3)
    with pytest.raises(CheckpointError, match="does not fit backbone 'timm/test_convnext'"):
        create_model("birdnet_v0", num_classes=3, backbone="timm/test_convnext", weights=str(tmp_path / "resnet.pth"))


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_fake_hub_cache_loads_offline_and_without_it_the_error_is_one_line(tmp_path):
    from safetensors.torch import save_file

    name, repo = "test_efficientnet.r160_in1k", "timm/test_efficientnet.r160_in1k"
    source = timm.create_model(name, pretrained=False)
    snapshot = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    torch.save(source.state_dict(), tmp_path / "expected.pth")
    script = ("import torch, sys; from cnnlab.models import create_model; "
              f"m = create_model('birdnet_v0', num_classes=3, backbone='timm/{name}'); "
              f"e = torch.load(sys.argv[1], weights_only=True); "
              "got = m.backbone.state_dict(); "
              "assert all(torch.equal(got[k], e[k]) for k in got), 'weights differ'; print('loaded')")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "expected.pth")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]

    env["HF_HOME"] = str(tmp_path / "empty-hf")
    done = _cli(["summary", "birdnet_v0", "--backbone", f"timm/{name}"], env)  # summary needs no weights
    assert done.returncode == 0, done.stderr
    done = _cli(["run", "birdnet_v0", "--backbone", f"timm/{name}", "--data", str(tmp_path)], env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"timm/{name}" in lines[0] and "--weights PATH" in lines[0] and str(tmp_path / "empty-hf") in lines[0]


def test_weights_preprocessing_reaches_training_predict_and_the_onnx_metadata(birds_lab, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from safetensors.torch import save_file
    from cnnlab.inference.export import export_onnx

    hub = tmp_path / "hub"
    hub.mkdir()
    state = timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({"architecture": "test_resnet", "pretrained_cfg": {
        "input_size": [3, 256, 256], "interpolation": "bicubic", "crop_pct": 0.95}}))
    cfg = load_experiment("birdnet_v0", overrides={
        **_overrides("timm/test_resnet", birds_lab, tmp_path), "model_args.weights": str(hub),
        "data.resize": "auto", "train.phases.0.epochs": 1})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    record = load_trained(folder).record
    assert (record["input_size"], record["resize"], record["crop_ratio"], record["interpolation"]) == \
        ([3, 256, 256], "crop", 0.95, "bicubic")
    from cnnlab.data.streaming import DecodeImages

    seen = []
    original = DecodeImages.__init__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DecodeImages, "__init__", lambda self, *a, **k: (seen.append(a), original(self, *a, **k))[1])
        predict([load_trained(folder)], [next(birds_lab.glob("*/*.jpg"))], workers=0, progress=False)
    assert seen[0][1:] == (256, "crop", 0.95, "bicubic")
    export_onnx(load_trained(folder), tmp_path / "m.onnx", log=lambda s: None)
    meta = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                        providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert (json.loads(meta["input_size"]), meta["resize"], meta["crop_ratio"], meta["interpolation"]) == \
        ([3, 256, 256], "crop", "0.95", "bicubic")


def test_unknown_zoo_names_are_one_clear_line():
    with pytest.raises(ConfigError, match="timm has no model 'convnext_tinyy'; close names: .*convnext_tiny"):
        create_model("birdnet_v0", num_classes=3, backbone="timm/convnext_tinyy", weights="none")
    with pytest.raises(ConfigError, match="no pretrained tag 'nope' for convnext_tiny; its tags: .*fb_in22k"):
        create_model("birdnet_v0", num_classes=3, backbone="timm/convnext_tiny.nope", weights="none")
    with pytest.raises(ConfigError, match="not a torchvision classification model"):
        create_model("birdnet_v0", num_classes=3, backbone="torchvision/resnet_18", weights="none")
    with pytest.raises(ConfigError, match="unknown backbone 'convnext_tiny'.*timm/NAME, torchvision/NAME"):
        create_model("birdnet_v0", num_classes=3, backbone="convnext_tiny", weights="none")


def test_torchvision_weights_carry_their_transforms_and_a_download_is_refused_in_one_line(tmp_path, monkeypatch):
    from urllib.error import URLError

    from torchvision.models import get_model_weights

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached there
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)

    from cnnlab.models.backbones import get_backbone

    entry = get_backbone("torchvision/convnext_tiny")
    member = get_model_weights("convnext_tiny").DEFAULT
    prep = entry.weights[entry.default_weights].preprocessing
    preset = member.transforms()
    assert (prep.size, round(prep.size / prep.crop_ratio), prep.interpolation) == \
        (preset.crop_size[0], preset.resize_size[0], preset.interpolation.value)
    assert entry.weights[entry.default_weights].top1 == member.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    with pytest.raises(CheckpointError, match="could not download the ImageNet weights 'imagenet1k_v1' of backbone "
                                              "'torchvision/convnext_tiny'.*--weights PATH"):
        create_model("birdnet_v0", num_classes=3, backbone="torchvision/convnext_tiny")


def test_list_backbones_names_the_zoos_and_filters_them(capsys):
    from cnnlab.cli.main import main

    assert main(["list", "backbones", "test_vi"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "timm/NAME" in out and "timm/test_vit.r160_in1k" in out
    assert main(["list", "backbones"]) == 0
    assert "timm/test_vit" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- probe


def test_probe_gives_one_row_per_backbone_and_recommends_the_best_validation_row(birds_lab, tmp_path):
    from cnnlab.studies.probe import run_probe

    overrides = {k: v for k, v in _overrides("x", birds_lab, tmp_path).items() if k != "model_args.backbone"}
    overrides.update({"train.phases.0.epochs": 3, "data.image_size": 64, "data.val_fraction": 0.34})
    folder = run_probe(["timm/test_resnet", "timm/test_efficientnet"], overrides=overrides, classic=["logreg"],
                       log=lambda s: None, out=str(tmp_path / "probe"))
    probe = json.loads((folder / "probe.json").read_text())
    rows = probe["rows"]
    assert [(r["backbone"], r["kind"]) for r in rows] == [
        ("timm/test_resnet", "network"), ("timm/test_resnet", "classic"),
        ("timm/test_efficientnet", "network"), ("timm/test_efficientnet", "classic")]
    for row in rows:
        assert row["test_acc"] and row["val_acc"] and row["params"] > 0 and row["macs"] > 0
        assert row["extract_img_s"] > 0 and row["input_size"] == [3, 64, 64]
    best = max(sum(r["val_acc"]) / len(r["val_acc"]) for r in rows)
    chosen = next(r for r in rows if r["name"] == probe["recommended"])
    assert sum(chosen["val_acc"]) / len(chosen["val_acc"]) >= best - 0.5 / rows[0]["num_val"]
    assert "recommended:" in (folder / "probe.md").read_text()
    # its report page says what the terminal says: chosen on validation, with its validation column, the
    # recommendation, top-1, parameters and MACs; the chart is of validation accuracy, never of test
    from cnnlab.studies.report import write_report

    page = write_report([folder]).read_text()
    for text in ("val accuracy", "test accuracy", "ImageNet top-1", "params (M)", "MACs (G)",
                 f"recommended: {chosen['backbone']}", "validation accuracy: mean ± std"):
        assert text in page, text
    assert "test accuracy on" not in page  # the comparison's test chart is not drawn for a probe


def test_the_recommendation_reads_validation_never_test():
    from cnnlab.studies.probe import recommend

    rows = [{"name": "a", "val_acc": [0.70, 0.72], "test_acc": [0.99, 0.99], "macs": 1},
            {"name": "b", "val_acc": [0.80, 0.80], "test_acc": [0.10, 0.10], "macs": 9},
            {"name": "c", "val_acc": [0.80, 0.80 + 0.4 / 100], "test_acc": [0.50, 0.50], "macs": 5}]
    assert recommend(rows, num_val=100)["name"] == "c"  # b and c tie within half an image: fewer MACs wins
    assert recommend(rows, num_val=1000)["name"] == "c"  # c is better by 2 images of 1,000
    rows[2]["val_acc"] = [0.79, 0.79]
    assert recommend(rows, num_val=1000)["name"] == "b"  # test accuracy never enters


def test_a_recommendation_won_on_multiply_adds_names_the_best_row_instead_of_calling_itself_best():
    from cnnlab.studies.probe import recommend, recommendation_text

    rows = [{"backbone": "big", "head": "linear (V0)", "val_acc": [0.96, 0.97], "test_acc": [0.9], "macs": 9},
            {"backbone": "small", "head": "linear (V0)", "val_acc": [0.95, 0.955], "test_acc": [0.9], "macs": 1}]
    for row in rows:
        row["name"] = row["backbone"]
    chosen = recommend(rows, num_val=28)  # 1.25 points apart, half an image is 1.8: a tie
    text = recommendation_text(chosen, 28, rows)
    assert chosen["name"] == "small" and "within half an image of the best (big, linear (V0): 96.50" in text
    assert "best mean validation" not in text
    text = recommendation_text(rows[0], 28, rows)  # the best itself
    assert text.startswith("recommended: big (linear (V0)): best mean validation accuracy 96.50")


def test_gradcam_on_resnet50_by_default_and_at_a_module_called_three_times(birds_lab, tmp_path):
    """The lab's backbone: the default layer (its last block's output) and `layer4.2.relu`, which
    torchvision's Bottleneck calls three times (the raw RuntimeError of 0.8), both explain the run."""
    cfg = load_experiment("birdnet_v0", overrides={**_overrides("resnet50", birds_lab, tmp_path),
                                                   "data.image_size": 64, "train.phases.0.epochs": 1})
    trained = load_trained(run_experiment(cfg, progress=False, log=lambda s: None))
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    for layer in (None, "backbone.layer4.2.relu", "backbone.layer3"):
        maps, explained = gradcam(trained, images, layer=layer, target=torch.tensor([0, 1]))
        assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and explained.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="--layer 'backbone.nope': not a module of this model"):
        gradcam(trained, images, layer="backbone.nope")
    with pytest.raises(ConfigError, match="its output is not a feature map"):
        gradcam(trained, images, layer="head")


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_timms_tf_efficientnet_lite_computes_exactly_what_cnnlabs_does(variant):
    """Measured before deciding to keep cnnlab's own Lite trunk (timm stays an optional extra, and
    runs saved since 0.3 name its stages): the same tensors, in order, give the same map."""
    from cnnlab.models.backbones import create_backbone

    ours, _ = create_backbone(f"efficientnet_{variant}", "none")
    theirs = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=0)
    keys = list(theirs.state_dict())
    assert len(keys) == len(ours.state_dict())
    theirs.load_state_dict(dict(zip(keys, ours.state_dict().values())), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (ours.eval()(x) - theirs.eval().forward_features(x)).abs().max() <= 1e-5
