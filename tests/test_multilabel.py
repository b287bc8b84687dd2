"""Multi-label classification end to end: each data format read into 0/1 targets, the figures equal to
scikit-learn's on the saved predictions, thresholds chosen on validation only, an iteratively stratified
split, the losses against their formulas, resume, export, predict and serve — and a single-label run's
files as they were."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MULTILABEL_CLASSES, interrupt_after, make_multilabel_images, write_easy_npz, write_multilabel_csv
from cnnlab.config import load_experiment
from cnnlab.errors import ConfigError, DataError, RunInterrupted
from cnnlab.multilabel import (AsymmetricLoss, MultiLabelBCE, average_precisions, fit_thresholds, multilabel_figures,
                               positive_weights)

pytest.importorskip("iterstrat")  # the test extra installs it (cnnlab[multilabel])


def _config(data: Path, tmp_path: Path, **overrides):
    # data.workers 0: the images decode in this process (a worker pool's start costs more than 200 small PNGs)
    base = {"data.path": str(data), "train.epochs": 4, "train.batch_size": 32, "seeds": [1],
            "out": str(tmp_path / "runs"), "device": "cpu", "train.optimizer.lr": 0.003, "data.workers": 0}
    base.update(overrides)
    return load_experiment("basenet", overrides=base)


def _run(cfg) -> Path:
    from cnnlab.studies.experiment import run_experiment

    return run_experiment(cfg, progress=False, log=lambda s: None)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- figures, thresholds, losses

def _random_problem(n=400, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, classes)) < rng.uniform(0.05, 0.5, classes)).astype(np.uint8)
    scores = np.clip(targets * rng.uniform(0.2, 1, (n, classes)) + rng.uniform(0, 0.7, (n, classes)), 0, 1)
    scores = np.round(scores, 2)  # ties, as real probabilities have them
    targets[:, -1] = 0  # a class without a positive: no AP, left out of mAP
    return scores, targets


def test_map_f1_exact_match_and_hamming_equal_scikit_learns():
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss

    scores, targets = _random_problem()
    thresholds = np.linspace(0.3, 0.7, targets.shape[1])
    figures = multilabel_figures(scores, targets, thresholds)
    present = targets.sum(0) > 0
    expected_aps = [average_precision_score(targets[:, c], scores[:, c]) for c in np.flatnonzero(present)]
    assert average_precisions(scores, targets)[present] == pytest.approx(expected_aps, abs=1e-12)
    assert np.isnan(average_precisions(scores, targets)[~present]).all()
    assert figures["map"] == pytest.approx(np.mean(expected_aps), abs=1e-12)
    assert figures["map_classes"] == int(present.sum())
    predicted = (scores >= thresholds).astype(np.uint8)
    assert figures["micro_f1"] == pytest.approx(f1_score(targets, predicted, average="micro", zero_division=0))
    assert figures["macro_f1"] == pytest.approx(f1_score(targets, predicted, average="macro", zero_division=0))
    assert figures["exact_match"] == pytest.approx(accuracy_score(targets, predicted))
    assert figures["hamming_loss"] == pytest.approx(hamming_loss(targets, predicted))


def test_thresholds_maximise_each_classs_f1_and_fixed_is_one_half():
    from sklearn.metrics import f1_score

    scores, targets = _random_problem(seed=3)
    chosen = fit_thresholds(scores, targets, "f1")
    for c in range(targets.shape[1] - 1):
        best = max(f1_score(targets[:, c], scores[:, c] >= t, zero_division=0) for t in np.unique(scores[:, c]))
        assert f1_score(targets[:, c], scores[:, c] >= chosen[c], zero_division=0) == pytest.approx(best)
    assert chosen[-1] == 0.5  # no positive in validation: nothing to learn, the default stays
    assert (fit_thresholds(scores, targets, "fixed") == 0.5).all()
    with pytest.raises(ValueError, match="f1, fixed"):
        fit_thresholds(scores, targets, "best")


def test_asymmetric_loss_and_smoothed_bce_follow_their_formulas():
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5), (torch.rand(8, 5) < 0.3).float()
    p = torch.sigmoid(logits)
    gamma_neg, gamma_pos, clip = 4.0, 1.0, 0.05
    p_m = (p - clip).clamp(min=0)
    direct = -(targets * (1 - p) ** gamma_pos * torch.log(p)
               + (1 - targets) * p_m ** gamma_neg * torch.log(1 - p_m)).sum(1).mean()
    assert AsymmetricLoss(gamma_neg, gamma_pos, clip)(logits, targets) == pytest.approx(float(direct), rel=1e-5)
    # γ = 0 and no margin: the asymmetric loss is BCE summed over classes
    plain = AsymmetricLoss(0.0, 0.0, 0.0)(logits, targets)
    assert plain == pytest.approx(float(MultiLabelBCE()(logits, targets)) * 5, rel=1e-5)
    smoothed = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets * 0.8 + 0.1)
    assert MultiLabelBCE(0.2)(logits, targets) == pytest.approx(float(smoothed))
    # linear in the target: mixup's λ·loss(a) + (1 − λ)·loss(b) is the loss of the mixed target
    other = (torch.rand(8, 5) < 0.5).float()
    loss = MultiLabelBCE()
    assert 0.3 * loss(logits, targets) + 0.7 * loss(logits, other) == pytest.approx(
        float(loss(logits, 0.3 * targets + 0.7 * other)), rel=1e-6)
    weights = positive_weights(torch.tensor([10, 0, 50]), 100, "balanced")
    assert weights.tolist() == pytest.approx([9.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- data formats and the split

def test_both_csv_layouts_read_the_same_targets_and_bad_cells_are_named(tmp_path):
    from cnnlab.data.classfolder import read_labels_csv

    separated = read_labels_csv(write_multilabel_csv(tmp_path / "a", count=40))
    columns = read_labels_csv(write_multilabel_csv(tmp_path / "b", count=40, layout="columns"))
    piped = read_labels_csv(write_multilabel_csv(tmp_path / "c", count=40, separator="|"))
    _, targets = make_multilabel_images(40)
    assert columns.multilabel and separated.multilabel and piped.multilabel
    assert columns.class_names == list(MULTILABEL_CLASSES)  # the header's order
    by_name = [separated.class_names.index(name) for name in MULTILABEL_CLASSES]
    assert (separated.label_matrix()[:, by_name] == targets).all()
    assert (columns.label_matrix() == targets).all() and (piped.label_matrix() == separated.label_matrix()).all()
    assert any(len(labels) == 0 for labels in separated.labels)  # images with no label: legitimate

    bad = tmp_path / "b" / "labels.csv"
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",yes"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels.csv:4: column 'cat' holds 'yes'; expected 0 or 1"):
        read_labels_csv(bad)
    mixed = tmp_path / "a" / "labels.csv"
    mixed.write_text(mixed.read_text().replace("bird;feeder", "bird|feeder", 1))
    with pytest.raises(DataError, match="both ';'.*data.label_separator"):
        read_labels_csv(mixed)


def test_hugging_face_sequence_of_class_labels_and_parquet_read_as_multilabel(tmp_path):
    datasets = pytest.importorskip("datasets")
    from cnnlab.config import DataConfig
    from cnnlab.data.loading import load_splits

    images, targets = make_multilabel_images(60, seed=5)
    names = list(MULTILABEL_CLASSES)
    features = datasets.Features({"image": datasets.Image(),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    rows = {"image": list(images), "tags": [list(np.flatnonzero(t)) for t in targets]}
    table = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": table.select(range(45)), "test": table.select(range(45, 60))}).save_to_disk(
        tmp_path / "saved")
    (tmp_path / "tables").mkdir()
    table.select(range(45)).to_parquet(tmp_path / "tables" / "train.parquet")
    table.select(range(45, 60)).to_parquet(tmp_path / "tables" / "test.parquet")
    for folder in ("saved", "tables"):
        splits = load_splits(DataConfig(path=str(tmp_path / folder), val_fraction=0.2), log=lambda s: None)
        assert splits.multilabel and splits.class_names == names, folder
        assert splits.test.labels.shape == (15, 4) and splits.test.labels.dtype == torch.float32
        assert (splits.test.labels.numpy() == targets[45:]).all(), folder
        assert len(splits.train) + len(splits.val) == 45


def test_the_split_keeps_each_labels_frequency_in_train_val_and_test(tmp_path):
    from cnnlab.config import DataConfig
    from cnnlab.data.loading import load_splits

    data = write_multilabel_csv(tmp_path / "d", count=400, seed=2)
    cfg = DataConfig(path=str(data), val_fraction=0.15, test_fraction=0.25, split_seed=4)
    splits = load_splits(cfg, log=lambda s: None)
    whole = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels]).mean(0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == pytest.approx((240, 60, 100), abs=3)
    for part in (splits.train, splits.val, splits.test):
        assert part.labels.mean(0).numpy() == pytest.approx(whole.numpy(), abs=0.03)
    again = load_splits(cfg, log=lambda s: None)  # seeded (and remembered): the same split
    assert torch.equal(again.test.labels, splits.test.labels)
    rows = splits.split_rows
    assert {r["split"] for r in rows} == {"train", "val", "test"} and any(";" in r["label"] for r in rows)


# ----------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    data = write_multilabel_csv(root / "data", count=240, seed=1)
    folder = _run(_config(data, root, **{"seeds": [1, 2], "seeds_together": "off"}))
    return {"root": root, "data": data, "folder": folder}


def test_a_run_measures_map_and_f1_as_scikit_learn_does_on_its_saved_predictions(multilabel_run):
    from sklearn.metrics import average_precision_score, f1_score

    from cnnlab.inference import load_trained

    folder = multilabel_run["folder"]
    run = folder / "seed-1"
    results = json.loads((run / "results.json").read_text())
    assert results["task"] == "multilabel" and results["thresholds"] == "f1"
    assert results["test_map"] > 0.8  # an easy task, learnt
    rows = _rows(run / "test_predictions.csv")
    names = load_trained(run).class_names
    probs = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])
    truth = np.array([[n in r["true"].split(";") for n in names] for r in rows], dtype=np.uint8)
    thresholds = np.array(load_trained(run).record["thresholds"])
    predicted = probs >= thresholds
    assert [r["predicted"] for r in rows] == [";".join(n for n, p in zip(names, row) if p) for row in predicted]
    present = truth.sum(0) > 0
    assert results["test_map"] == pytest.approx(
        np.mean([average_precision_score(truth[:, c], probs[:, c]) for c in np.flatnonzero(present)]), abs=1e-5)
    assert results["test_micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro"), abs=1e-6)
    assert results["test_macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0),
                                                     abs=1e-6)
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,phase,train_loss,train_acc,val_loss,val_map,val_micro_f1")
    for name in ("per_class.csv", "pr_curves.png", "label_counts.png", "top_losses.png", "curves.png"):
        assert (run / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["test_map_mean"] == pytest.approx(np.mean([r["test_map"] for r in summary["runs"]]))
    assert "mAP" in (folder / "summary.md").read_text()
    html = (folder / "report.html").read_text() if (folder / "report.html").is_file() else ""
    from cnnlab.studies.report import write_report

    html = write_report([folder]).read_text()
    for heading in ("Which classes fail", "most-missed classes", "precision–recall", "Top losses"):
        assert heading in html, heading


def test_thresholds_come_from_the_validation_split_the_test_split_does_not_move_them(tmp_path):
    from cnnlab.inference import load_trained

    data = write_multilabel_csv(tmp_path / "d", count=200, seed=6)
    lines = data.read_text().splitlines()
    plan = ["train"] * 130 + ["val"] * 30 + ["test"] * 40
    fixed = data.parent / "fixed.csv"
    fixed.write_text("path,labels,split\n" + "\n".join(f"{row},{s}" for row, s in zip(lines[1:], plan)) + "\n")
    other = data.parent / "other.csv"  # the same train and validation rows; every test label changed
    flipped = [f"{row.split(',')[0]},{';'.join(n for n in MULTILABEL_CLASSES if n not in row.split(',')[1])}"
               for row in lines[161:]]
    other.write_text("path,labels,split\n" + "\n".join(f"{row},{s}" for row, s in zip(lines[1:161], plan))
                     + "\n" + "\n".join(f"{row},test" for row in flipped) + "\n")
    a = load_trained(_run(_config(fixed, tmp_path, out=str(tmp_path / "a"), **{"data.leak_check": "off"})))
    b_folder = _run(_config(other, tmp_path, out=str(tmp_path / "b"), **{"data.leak_check": "off"}))
    b = load_trained(b_folder)
    assert a.record["thresholds"] == b.record["thresholds"]
    assert len(set(a.record["thresholds"])) > 1  # chosen per class, not 0.5 everywhere
    results = json.loads((b_folder / "seed-1" / "results.json").read_text())
    assert results["test_map"] < 0.5  # the test labels were flipped: measured, not fitted


def test_multilabel_resumes_exactly_after_an_interrupt(tmp_path):
    from cnnlab.studies.resume import resume

    data = write_multilabel_csv(tmp_path / "d", count=160, seed=8)
    whole = _run(_config(data, tmp_path, out=str(tmp_path / "a"), **{"train.mixup": 0.4}))
    cfg = _config(data, tmp_path, out=str(tmp_path / "b"), **{"train.mixup": 0.4})
    from cnnlab.studies.experiment import run_experiment

    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=interrupt_after(2))
    (group,) = (tmp_path / "b" / "basenet").iterdir()
    resume(group, progress=False, log=lambda s: None)
    drop = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731 — timing column
    assert drop((group / "seed-1" / "metrics.csv").read_text()) == drop((whole / "seed-1" / "metrics.csv").read_text())
    first, again = (json.loads((f / "seed-1" / "results.json").read_text()) for f in (whole, group))
    assert (again["test_map"], again["test_loss"]) == (first["test_map"], first["test_loss"])


def test_export_predict_and_serve_answer_the_labels_above_the_thresholds(multilabel_run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cnnlab.inference import load_trained
    from cnnlab.inference.export import export_model
    from cnnlab.inference.predict import predict, trust_answers
    from cnnlab.inference.serve import create_app

    run = multilabel_run["folder"] / "seed-1"
    model = load_trained(run)
    report = export_model(model, tmp_path / "m.onnx", log=lambda s: None)
    assert report["tolerance"] == 1e-4  # the graph's logits within 1e-4 of PyTorch's, checked on export
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert metadata["task"] == "multilabel"
    assert json.loads(metadata["thresholds"]) == dict(zip(model.class_names, model.record["thresholds"]))
    files = sorted(multilabel_run["data"].parent.glob("img00*.png"))[:6]
    answers = {}
    for name, trained in (("torch", model), ("onnx", load_trained(tmp_path / "m.onnx", engine="onnxruntime"))):
        predictions, _ = predict([trained], files, workers=0, progress=False)
        answers[name] = trust_answers(trained, predictions, coverage=None, reject_rate=None).labels
    assert answers["torch"] == answers["onnx"]
    _, targets = make_multilabel_images(240, seed=1)
    truth = [[MULTILABEL_CLASSES[c] for c in np.flatnonzero(targets[int(f.stem[3:])])] for f in files]
    assert sum(sorted(a) == sorted(t) for a, t in zip(answers["torch"], truth)) >= 4  # learnt, mostly exact
    with TestClient(create_app(run, engine="torch")) as client:
        uploads = [("file", (f.name, f.read_bytes(), "image/png")) for f in files]
        served = client.post("/v1/predict", files=uploads, params={"top_k": 4}).json()["predictions"]
        assert [p["labels"] for p in served] == answers["torch"]
        assert all(len(p["top_k"]) == 4 for p in served)
        refused = client.post("/v1/predict", files=uploads[:1], params={"coverage": 0.9})
        assert refused.status_code == 409 and "single-label" in refused.json()["error"]
        card = client.get("/v1/model").json()
        assert card["task"] == "multilabel" and set(card["thresholds"]) == set(model.class_names)
    with pytest.raises(Exception, match="single-label model's"):
        model.prediction_sets(files[:1])


def test_wrong_settings_for_the_task_are_one_line_each(tmp_path):
    data = write_multilabel_csv(tmp_path / "d", count=60)
    for overrides, pattern in (({"task": "single"}, "the experiment is single, but the data .*labels.csv"),
                               ({"train.loss": "ce"}, "key 'train.loss': ce"),
                               ({"data.sampler": "balanced"}, "key 'data.sampler'"),
                               ({"train.keep_best": "val_acc"}, "val_acc is not measured for multi-label")):
        with pytest.raises(ConfigError, match=pattern):
            _run(_config(data, tmp_path, **overrides))
    single = write_easy_npz(tmp_path / "npz")
    with pytest.raises(ConfigError, match="the experiment is multilabel, but the data"):
        _run(_config(single, tmp_path, task="multilabel"))
    with pytest.raises(ConfigError, match="train.loss.*bce is a multi-label loss"):
        _run(_config(single, tmp_path, **{"train.loss": "bce"}))


def test_asl_keep_best_on_val_map_and_folds_train_a_multilabel_experiment(tmp_path):
    data = write_multilabel_csv(tmp_path / "d", count=160, seed=9)
    folder = _run(_config(data, tmp_path, **{"train.loss": "asl", "train.keep_best": "val_map",
                                             "train.class_weights": "balanced", "train.label_smoothing": 0.1}))
    results = json.loads((folder / "seed-1" / "results.json").read_text())
    history = _rows(folder / "seed-1" / "metrics.csv")
    best = max(range(len(history)), key=lambda i: (float(history[i]["val_map"]), -i))
    assert results["kept_epoch"] == best + 1 and results["test_map"] > 0.6
    folds = _run(_config(data, tmp_path, out=str(tmp_path / "k"), **{"data.folds": 3, "train.epochs": 2,
                                                                      "seeds_together": "off"}))
    summary = json.loads((folds / "summary.json").read_text())
    assert len(summary["runs"]) == 3 and all(r["final_val_map"] is not None for r in summary["runs"])


def test_a_single_label_runs_files_are_as_before(npz_data, tmp_path):
    folder = _run(_config(npz_data, tmp_path, **{"train.epochs": 2}))
    run = folder / "seed-1"
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,phase,train_loss,train_acc,val_loss,val_acc,val_bal_acc,val_macro_f1,lr,epoch_time_s"
    results = json.loads((run / "results.json").read_text())
    assert "task" not in results and "test_map" not in results and "test_acc" in results
    assert not any((run / name).exists() for name in ("pr_curves.png", "label_counts.png"))
    from cnnlab.inference import load_trained

    record = load_trained(run).record
    assert record["task"] == "single" and record["thresholds"] is None
    assert (run / "confusion_matrix.csv").is_file() and (folder / "summary.json").is_file()


def test_the_how_tos_table_is_the_benchmarks_json():
    """docs/how-to/multilabel.md quotes benchmarks/results/multilabel_birds.json: each figure equals the file's."""
    from cnnlab.reporting.tables import pm

    root = Path(__file__).resolve().parents[1]
    record = json.loads((root / "benchmarks" / "results" / "multilabel_birds.json").read_text())
    text = (root / "docs" / "how-to" / "multilabel.md").read_text()
    keys = ("test_map", "test_micro_f1", "test_macro_f1", "test_exact_match", "test_hamming_loss")
    rows = [line for line in text.splitlines() if line.startswith("| `birdnet")]
    assert len(rows) == len(record["variants"]) == 4
    for line, (spec, entry) in zip(rows, record["variants"].items()):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:6] == [pm([r[k] for r in entry["runs"]], percent=True) for k in keys], spec
        assert cells[6] == f"{entry['experiment_s']:.0f}", spec


def test_compare_judges_multilabel_experiments_by_map_and_refuses_classic_heads(tmp_path, capsys):
    from cnnlab.cli.main import main
    from cnnlab.studies.report import write_report

    data = write_multilabel_csv(tmp_path / "d", count=96, seed=4)
    common = ["--data", str(data), "--epochs", "1", "--seeds", "1", "--device", "cpu", "--no-progress",
              "--out", str(tmp_path / "runs"), "--set", "data.workers=0"]
    assert main(["compare", "basenet", "basenet_pp", *common]) == 0
    (folder,) = (tmp_path / "runs" / "compare").iterdir()
    rows = json.loads((folder / "compare.json").read_text())["rows"]
    for row in rows:
        (results,) = Path(row["folder"]).glob("seed-1/results.json")
        assert row["figure"] == "test_map" and row["test_acc"] == [json.loads(results.read_text())["test_map"]]
    assert "test mAP" in (folder / "compare.md").read_text()
    assert "test mAP of each variant" in write_report([folder]).read_text()
    capsys.readouterr()
    frozen = ["--set", "model_args.weights=none", "model_args.backbone=efficientnet_lite0", "data.image_size=32"]
    assert main(["compare", "birdnet_v0", "--classic", "logreg", *common, *frozen]) == 2
    assert "--classic: the classic heads (scikit-learn) here predict one class an image" in capsys.readouterr().err
