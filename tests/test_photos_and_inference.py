"""Your own photos to a model you can use: class folders, best weights, predict, export."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli.main import main
from conftest import interrupt_after

from cnnlab.config import load_experiment
from cnnlab.data import load_splits
from cnnlab.errors import DataError, RunInterrupted
from cnnlab.inference import load_trained
from cnnlab.inference.predict import predict
from cnnlab.studies import resume, run_experiment
from cnnlab.training import Learner
from cnnlab.training import learner as trainer_module
from cnnlab.training.selection import should_stop
from cnnlab.config import EarlyStoppingConfig

FORMATS = [("png", "RGB"), ("jpg", "RGB"), ("webp", "RGB"), ("bmp", "RGB"), ("gif", "P"), ("tif", "CMYK"),
           ("png", "L"), ("png", "RGBA"), ("png", "P")]


def make_photos(root: Path, classes=("cat", "dog", "owl"), per_class: int = 12, seed: int = 0) -> Path:
    """Class folders of mixed sizes, formats and modes; each class has its own dominant colour."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = int(rng.integers(20, 70)), int(rng.integers(20, 70))
            array = rng.integers(0, 70, (h, w, 3), dtype=np.uint8)
            array[..., label % 3] = 220
            suffix, mode = FORMATS[(i + label) % len(FORMATS)]
            Image.fromarray(array).convert(mode).save(root / name / f"{i:03d}.{suffix}")
    return root


def photo_cfg(data: Path, tmp_path: Path, model="basenet", **overrides):
    return load_experiment(model, overrides={"data.path": str(data), "train.epochs": 2, "train.batch_size": 8,
                                             "seeds": [1],
                                             "device": "cpu", "data.workers": 0, "out": str(tmp_path / "runs"),
                                             **overrides})


def test_class_folders_of_mixed_photos_train_end_to_end_with_a_saved_split(tmp_path):
    photos = make_photos(tmp_path / "photos", per_class=20)
    cfg = photo_cfg(photos, tmp_path)
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    rows = list(csv.DictReader((folder / "split.csv").read_text().splitlines()))
    assert len(rows) == 60 and len({r["path"] for r in rows}) == 60  # every file once: the splits are disjoint
    for split, share in (("train", 14), ("val", 2), ("test", 4)):  # 70/10/20 %, stratified: per class
        per_class = {c: sum(r["label"] == c and r["split"] == split for r in rows) for c in ("cat", "dog", "owl")}
        assert per_class == {"cat": share, "dog": share, "owl": share}, (split, per_class)
    results = json.loads((folder / "seed-1" / "results.json").read_text())
    assert results["num_test"] == sum(r["split"] == "test" for r in rows)
    assert results["num_val"] == sum(r["split"] == "val" for r in rows)
    recorded = load_experiment(folder / "experiment.yaml")
    assert recorded.data.split_file == str((folder / "split.csv").resolve()) and recorded.data.num_classes == 3
    # the same seed draws the same split; the saved list reproduces it; another seed draws another
    again = run_experiment(photo_cfg(photos, tmp_path, **{"train.epochs": 1}), progress=False, log=lambda s: None)
    assert (again / "split.csv").read_text() == (folder / "split.csv").read_text()
    reused = load_splits(recorded.data, default_size=32)
    assert reused.split_rows == [{k: r[k] for k in ("path", "label", "split")} for r in rows]
    assert len(reused.train) == results["num_train"] and len(reused.test) == results["num_test"]
    other = load_splits(photo_cfg(photos, tmp_path, **{"data.split_seed": 7}).data, default_size=32)
    assert [r for r in other.split_rows if r["split"] == "test"] != [r for r in rows if r["split"] == "test"]


def test_a_subset_of_class_folders_lists_only_the_images_it_trains_on(tmp_path):
    photos = make_photos(tmp_path / "photos", per_class=20)
    cfg = photo_cfg(photos, tmp_path, **{"data.subset": 15, "train.epochs": 1})
    splits = load_splits(cfg.data, default_size=32)
    train_rows = [r for r in splits.split_rows if r["split"] == "train"]
    assert len(splits.train) == len(train_rows) == 15  # of 42 drawn for training
    assert sorted(r["label"] for r in train_rows).count("cat") == 5  # stratified: 5 a class
    full = load_splits(photo_cfg(photos, tmp_path).data, default_size=32)
    assert {r["path"] for r in train_rows} < {r["path"] for r in full.split_rows if r["split"] == "train"}
    assert [r for r in splits.split_rows if r["split"] != "train"] == \
        [r for r in full.split_rows if r["split"] != "train"]  # the same validation and test images
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    recorded = load_experiment(folder / "experiment.yaml")  # names split.csv; subset still 15
    reused = load_splits(recorded.data, default_size=32)
    assert reused.split_rows == splits.split_rows and len(reused.train) == 15


def test_images_are_resized_as_the_experiment_says(tmp_path):
    photos = make_photos(tmp_path / "photos", per_class=6)
    for resize in ("stretch", "crop"):
        splits = load_splits(photo_cfg(photos, tmp_path, **{"data.resize": resize, "data.image_size": 24,
                                                             "data.val_fraction": 0.0}).data)
        assert splits.train.image_shape == (3, 24, 24) and splits.resize == resize
        assert splits.train.images.dtype == torch.uint8  # small: held in memory


def test_a_class_too_small_for_the_split_is_named(tmp_path):
    photos = make_photos(tmp_path / "photos", per_class=6)
    for extra in list((photos / "owl").iterdir())[2:]:
        extra.unlink()
    with pytest.raises(DataError, match=r"too few images for a train/val/test split \(each needs at least 3\): "
                                        r"owl \(2\)"):
        load_splits(photo_cfg(photos, tmp_path).data)


def test_a_csv_of_path_label_is_a_dataset_too(tmp_path):
    photos = make_photos(tmp_path / "photos", per_class=6)
    lines = ["path,label"] + [f"{p.relative_to(photos).as_posix()},{p.parent.name}"
                              for p in sorted(photos.rglob("*.*"))]
    (photos / "labels.csv").write_text("\n".join(lines) + "\n")
    splits = load_splits(photo_cfg(photos / "labels.csv", tmp_path).data)
    assert splits.class_names == ["cat", "dog", "owl"] and len(splits.train) + len(splits.val) + len(splits.test) == 18
    (photos / "bad.csv").write_text("path,label\n../outside.png,cat\n")
    with pytest.raises(DataError, match=r"bad.csv:2: '../outside.png' points outside the dataset folder"):
        load_splits(photo_cfg(photos / "bad.csv", tmp_path).data)


# ----------------------------------------------------------------------------- best weights, early stopping


def test_early_stopping_counts_epochs_without_improvement():
    cfg = EarlyStoppingConfig(monitor="val_loss", patience=2, min_delta=0.01)
    rows = lambda values: [{"val_loss": v} for v in values]  # noqa: E731
    assert not should_stop(rows([1.0, 0.9, 0.895]), cfg)  # one epoch without a 0.01 improvement
    assert should_stop(rows([1.0, 0.9, 0.895, 0.899]), cfg)  # two
    assert not should_stop(rows([1.0, 0.9, 0.895, 0.85]), cfg)
    assert should_stop([{"val_acc": v} for v in (0.5, 0.6, 0.6, 0.59)], EarlyStoppingConfig("val_acc", 2))


def test_a_scripted_validation_sequence_stops_at_the_patience_limit(npz_data, tmp_path, monkeypatch):
    scripted = iter([1.0, 0.8, 0.85, 0.82, 0.5, 0.4])  # best at epoch 2; epochs 3 and 4 do not improve
    real = trainer_module.evaluate

    def fake(module, split, **kwargs):
        result = real(module, split, **kwargs)
        if kwargs.get("batch_size") and split is not None and len(split) == 16:  # the validation split
            result["loss"] = next(scripted)
        return result

    monkeypatch.setattr(trainer_module, "evaluate", fake)
    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "train.epochs": 6, "device": "cpu",
                                                "seeds": [1],
                                                "train.early_stopping": {"monitor": "val_loss", "patience": 2},
                                                "train.keep_best": "val_loss", "out": str(tmp_path)})
    lines = []
    folder = run_experiment(cfg, progress=False, log=lines.append)
    results = json.loads((folder / "seed-1" / "results.json").read_text())
    assert results["epochs_trained"] == 4 and results["kept_epoch"] == 2 and results["stopped_early"] == ["train"]
    assert any(line.startswith("early stopping: val_loss has not improved") for line in lines)


def _evaluate_weights(weights: Path, splits) -> float:
    trained = load_trained(weights)
    right = 0
    for images, labels in splits.test.batches(100):
        right += int((trained.probabilities(images).argmax(1) == labels).sum())
    return right / len(splits.test)


def test_kept_weights_give_the_reported_test_figure_and_resume_exactly(npz_data, tmp_path):
    common = {"data.path": str(npz_data), "train.epochs": 5, "train.batch_size": 32, "device": "cpu", "seeds": [1],
              "train.keep_best": "val_acc", "train.early_stopping": {"monitor": "val_loss", "patience": 2},
              "preprocess.normalize": "featurewise"}
    cfg = load_experiment("basenet_pp", overrides={**common, "out": str(tmp_path / "a")})
    whole = run_experiment(cfg, progress=False, log=lambda s: None) / "seed-1"
    results = json.loads((whole / "results.json").read_text())
    metrics = list(csv.DictReader((whole / "metrics.csv").read_text().splitlines()))
    accs = [float(r["val_acc"]) for r in metrics]
    assert results["kept_epoch"] == int(metrics[accs.index(max(accs))]["epoch"])
    assert results["test_acc"] == pytest.approx(_evaluate_weights(whole / "model.safetensors", load_splits(cfg.data)),
                                                abs=1e-12)

    with pytest.raises(RunInterrupted):
        run_experiment(load_experiment("basenet_pp", overrides={**common, "out": str(tmp_path / "b")}),
                       progress=False, log=interrupt_after(2))
    (folder,) = (tmp_path / "b" / "basenet_pp").iterdir()
    resume(folder, progress=False, log=lambda s: None)
    again = json.loads((folder / "seed-1" / "results.json").read_text())
    for key in ("test_loss", "test_acc", "kept_epoch", "epochs_trained", "stopped_early"):
        assert again[key] == results[key], key


# ----------------------------------------------------------------------------- predict


def _write_pngs(splits_set, class_names, root: Path) -> None:
    for i, (image, label) in enumerate(zip(splits_set.images, splits_set.labels)):
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")


def _training_probabilities(cfg, run_dir: Path, split):
    """The probabilities the training code computes: its own preprocessing, the saved weights, divided by the
    temperature the run fitted on its validation split (results.json; trust/)."""
    import json

    from safetensors.torch import load_file

    temperature = json.loads((run_dir / "results.json").read_text())["temperature"]

    trainer = Learner(cfg, load_splits(cfg.data, default_size=32) if cfg.model.startswith("basenet") else
                      _bird_splits(cfg), seed=1, log=lambda s: None, progress=False)
    trainer.model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    trainer.model.eval()
    out = []
    with torch.no_grad():
        for images, _ in split.batches(50):
            out.append(torch.softmax(trainer.model(trainer.preprocess(images, train=False)) / temperature, 1))
    return torch.cat(out)


def _bird_splits(cfg):
    from cnnlab.studies.experiment import load_data

    return load_data(cfg, log=lambda s: None)


def test_predict_equals_evaluation_for_basenet_pp_with_fitted_normalisation(npz_data, tmp_path, capsys):
    cfg = load_experiment("basenet_pp", overrides={"data.path": str(npz_data), "train.epochs": 1, "device": "cpu",
                                                   "seeds": [1, 2], "out": str(tmp_path / "runs")})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    splits = load_splits(cfg.data)
    _write_pngs(splits.test, splits.class_names, tmp_path / "photos")
    (tmp_path / "photos" / "class0" / "broken.png").write_bytes(b"not a png")
    expected = _training_probabilities(cfg, folder / "seed-1", splits.test)
    predictions, errors = predict([load_trained(folder, seed=1)], [tmp_path / "photos"], workers=0, progress=False)
    assert len(errors) == 1 and "broken.png: cannot decode image" in errors[0]
    order = {p.path.name: p for p in predictions}
    got = torch.stack([order[f"{i:04d}.png"].probabilities for i in range(len(splits.test))])
    assert torch.allclose(got, expected, atol=1e-5)
    # the weights file alone predicts the same as the run folder
    alone = predict([load_trained(folder / "seed-1" / "model.safetensors")], [tmp_path / "photos"], workers=0,
                    progress=False)[0]
    assert all(torch.equal(a.probabilities, b.probabilities) for a, b in zip(alone, predictions))
    # the command line: CSV contract, ensemble = argmax of the averaged probabilities, accuracy, skip count
    out = tmp_path / "preds.csv"
    assert main(["predict", str(folder), str(tmp_path / "photos"), "--ensemble", "--top-k", "2", "--out", str(out),
                 "--no-progress", "--workers", "0"]) == 0
    printed, err = capsys.readouterr()
    table = list(csv.DictReader(out.read_text().splitlines()))
    assert list(table[0]) == ["path", "pred_1", "prob_1", "pred_2", "prob_2"] and len(table) == len(splits.test)
    both = [load_trained(folder, seed=s) for s in (1, 2)]
    for row in table[:10]:
        image = torch.from_numpy(np.asarray(Image.open(row["path"]).convert("RGB"))).permute(2, 0, 1)[None]
        mean = torch.stack([m.probabilities(image)[0] for m in both]).mean(0)
        assert row["pred_1"] == splits.class_names[int(mean.argmax())]
        assert float(row["prob_1"]) == pytest.approx(float(mean.max()), abs=1e-6)
    assert "accuracy:" in printed and "skipped 1 unreadable file(s)" in err
    assert main(["predict", str(folder), str(tmp_path / "photos"), "--ensemble", "--out", str(out)]) == 2
    assert f"{out}: already exists; cnnlab does not overwrite files" in capsys.readouterr().err
    assert main(["predict", str(folder), str(tmp_path / "photos")]) == 2
    assert "choose one with --seed S, or average them with --ensemble" in capsys.readouterr().err


def test_predict_equals_evaluation_for_a_birdnet(birds_lab, tmp_path):
    cfg = load_experiment("birdnet_v1", overrides={
        "data.path": str(birds_lab), "data.image_size": 64, "data.workers": 0, "device": "cpu",
        "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none", "train.batch_size": 4,
        "train.phases.0.epochs": 1, "train.feature_cache_dir": str(tmp_path / "fc"), "seeds": [1],
        "out": str(tmp_path / "runs")})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    splits = _bird_splits(cfg)
    expected = _training_probabilities(cfg, folder / "seed-1", splits.test)
    predictions, errors = predict([load_trained(folder)], list(splits.test.paths), workers=0, progress=False)
    assert not errors
    assert torch.allclose(torch.stack([p.probabilities for p in predictions]), expected, atol=1e-5)


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("model, uint8_input", [("basenet", False), ("basenet_pp", True), ("birdnet_v1", False)])
def test_onnx_export_matches_pytorch_at_batch_sizes_1_and_5(model, uint8_input, npz_data, birds_lab, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from cnnlab.inference.export import export_onnx

    if model == "birdnet_v1":
        overrides = {"data.path": str(birds_lab), "data.image_size": 64, "data.workers": 0,
                     "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none",
                     "train.batch_size": 4, "train.phases.0.epochs": 1, "train.feature_cache_dir": str(tmp_path / "fc")}
    else:
        overrides = {"data.path": str(npz_data), "train.epochs": 1}
    cfg = load_experiment(model, overrides={**overrides, "device": "cpu", "seeds": [1], "out": str(tmp_path / "runs")})
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    lines = []
    report = export_onnx(load_trained(folder), tmp_path / "m.onnx", uint8_input=uint8_input, log=lines.append)
    assert set(report["max_abs_diff"]) == {1, 5} and max(report["max_abs_diff"].values()) < 1e-4
    assert "test images" in report["checked_on"]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == load_trained(folder).class_names
    shape = (3, 64, 64, 3) if uint8_input else (3, 3, 64, 64)
    shape = shape if model == "birdnet_v1" else ((3, 32, 32, 3) if uint8_input else (3, 3, 32, 32))
    feed = np.zeros(shape, np.uint8 if uint8_input else np.float32)
    assert session.run(None, {session.get_inputs()[0].name: feed})[0].shape[0] == 3  # dynamic batch
