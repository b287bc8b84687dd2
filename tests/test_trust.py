"""Probabilities you can trust (cnnlab/trust/): calibration measured against its definitions, a temperature
that recovers a planted one, conformal coverage held over many random splits, 'unknown' rules chosen on
validation only, and the same calibrated answers from a run's Learner, predict, serve's app and an
exported graph."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_easy_npz
from cnnlab.trust import calibration, conformal, rejection
from cnnlab.trust.fitted import Trust, TrustError, fit_trust, trust_figures


def _synthetic(n: int, classes: int = 10, *, sharpness: float = 3.0, temperature: float = 1.0, seed: int = 0):
    """Logits whose softmax at `temperature` is the true distribution the labels are drawn from."""
    rng = np.random.default_rng(seed)
    logits = sharpness * rng.normal(size=(n, classes))
    probs = calibration.softmax(logits, temperature)
    labels = (probs.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


# ----------------------------------------------------------------------------- calibration

def test_temperature_fitting_recovers_a_planted_temperature():
    for planted in (0.5, 1.0, 2.5):
        logits, labels = _synthetic(20_000, temperature=planted, seed=int(planted * 10))
        assert calibration.fit_temperature(logits, labels) == pytest.approx(planted, rel=0.05)



def test_a_split_the_network_gets_all_right_keeps_its_own_probabilities():
    """No error on validation: the NLL falls all the way to T → 0, which would make every later answer certain
    (a recorded tutorial showed 1e-30 probabilities); there is nothing to fit, so T stays 1. One error among
    them gives a finite minimiser again."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, 28)
    logits = rng.normal(size=(28, 5))
    logits[np.arange(28), labels] += 4.0  # every image right
    assert calibration.fit_temperature(logits, labels) == 1.0
    wrong = labels.copy()
    wrong[0] = (labels[0] + 1) % 5
    fitted = calibration.fit_temperature(logits, wrong)
    assert 0.05 < fitted < 100 and fitted != 1.0

def test_ece_and_adaptive_ece_equal_a_direct_computation():
    rng = np.random.default_rng(1)
    probs = calibration.softmax(rng.normal(size=(1003, 7)) * 2)
    labels = rng.integers(0, 7, 1003)
    confidence, predicted = probs.max(1), probs.argmax(1)
    right = predicted == labels
    # equal-width: bin b holds confidences in (b/15, (b+1)/15]
    direct = 0.0
    for b in range(15):
        members = [i for i in range(1003) if b / 15 < confidence[i] <= (b + 1) / 15]
        if members:
            direct += len(members) / 1003 * abs(np.mean(right[members]) - np.mean(confidence[members]))
    assert calibration.ece(probs, labels) == pytest.approx(direct, abs=1e-12)
    # equal-mass: 15 consecutive chunks of the images sorted by confidence (sizes differ by at most one)
    order = np.argsort(confidence, kind="stable")
    direct = sum(len(chunk) / 1003 * abs(right[chunk].mean() - confidence[chunk].mean())
                 for chunk in np.array_split(order, 15))
    assert calibration.adaptive_ece(probs, labels) == pytest.approx(direct, abs=1e-12)


def test_nll_and_brier_equal_scikit_learns():
    from sklearn.metrics import log_loss

    logits, labels = _synthetic(500, classes=5, seed=2)
    probs = calibration.softmax(logits)
    assert calibration.nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(5)), rel=1e-9)
    onehot = np.eye(5)[labels]
    assert calibration.brier(probs, labels) == pytest.approx(((probs - onehot) ** 2).sum(1).mean(), rel=1e-12)


def test_a_perfectly_calibrated_model_has_a_small_ece_and_an_overconfident_one_a_large_one():
    logits, labels = _synthetic(20_000, seed=3)
    assert calibration.ece(calibration.softmax(logits), labels) < 0.015
    overconfident = calibration.softmax(logits * 3)
    assert calibration.ece(overconfident, labels) > 0.1
    fitted = calibration.fit_temperature(logits * 3, labels)  # the temperature undoes the sharpening
    assert fitted == pytest.approx(3.0, rel=0.05)
    assert calibration.ece(calibration.softmax(logits * 3, fitted), labels) < 0.015


# ----------------------------------------------------------------------------- conformal sets

def test_conformal_quantile_is_the_ceil_n_plus_one_order_statistic():
    scores = np.arange(1, 11) / 10  # 0.1 .. 1.0
    assert conformal.quantile(scores, 0.9) == pytest.approx(1.0)  # ⌈11 × 0.9⌉ = 10th
    assert conformal.quantile(scores, 0.8) == pytest.approx(0.9)  # ⌈8.8⌉ = 9th
    assert conformal.quantile(scores, 0.95) == math.inf  # ⌈10.45⌉ = 11 > n: every class
    with pytest.raises(ValueError):
        conformal.quantile(scores, 1.0)


@pytest.mark.parametrize("method", ["aps", "raps", "lac"])
def test_conformal_coverage_holds_over_many_random_splits(method):
    """On exchangeable data, coverage ≥ 1 − α on average over calibration draws (Vovk; Angelopoulos et al.):
    200 random calibration/test splits, the mean coverage within a binomial tolerance of the guarantee."""
    logits, labels = _synthetic(4_000, classes=10, seed=4)
    probs = calibration.softmax(logits)
    rng = np.random.default_rng(5)
    for coverage in (0.8, 0.9, 0.95):
        hits = []
        for _ in range(200):
            order = rng.permutation(len(labels))
            cal, test = order[:500], order[500:1500]
            qhat = conformal.quantile(conformal.scores(probs[cal], labels[cal], method=method, rng=rng), coverage)
            bare = conformal.prediction_sets(probs[test], qhat, method=method, u=rng.random(len(test)))
            sets = conformal.prediction_sets(probs[test], qhat, method=method)
            hits.append([np.mean([y in s for s, y in zip(found, labels[test])]) for found in (bare, sets)])
        bare, answered = np.mean(hits, axis=0)
        # 200 × 1000 test images: the binomial standard error of the mean is ~0.0007; 4 of them of slack
        slack = 4 * math.sqrt(coverage * (1 - coverage) / (200 * 1000))
        assert coverage - slack <= bare <= coverage + 1 / 501 + slack  # the definition: tight on both sides
        assert bare <= answered < 1.0  # U = 0 and the top class always in: only ever more


def test_sets_shrink_as_the_model_improves_and_are_never_empty():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 10, 3_000)
    noise = rng.normal(size=(3_000, 10))
    for method in ("aps", "raps", "lac"):
        sizes = []
        for signal in (1.0, 2.5, 5.0):  # the true class's logit stands further out: a more accurate model
            probs = calibration.softmax(noise + signal * np.eye(10)[labels])
            qhat = conformal.quantile(conformal.scores(probs[:1000], labels[:1000], method=method, rng=rng), 0.9)
            sets = conformal.prediction_sets(probs[1000:], qhat, method=method)
            assert min(map(len, sets)) >= 1
            sizes.append(np.mean([len(s) for s in sets]))
        assert sizes[0] > sizes[1] > sizes[2], (method, sizes)


def test_a_set_is_a_prefix_of_the_ranking_and_raps_keeps_sets_smaller():
    logits, labels = _synthetic(3_000, classes=20, sharpness=1.5, seed=7)
    probs = calibration.softmax(logits)
    sizes = {}
    for method in ("aps", "raps"):
        qhat = conformal.quantile(conformal.scores(probs[:1000], labels[:1000], method=method, lam=0.05,
                                                   rng=np.random.default_rng(1)), 0.9)
        sets = conformal.prediction_sets(probs[1000:], qhat, method=method, lam=0.05)
        ranking = np.argsort(-probs[1000:], axis=1, kind="stable")
        assert all(s == ranking[i, :len(s)].tolist() for i, s in enumerate(sets))
        sizes[method] = np.mean([len(s) for s in sets])
    assert sizes["raps"] <= sizes["aps"]


# ----------------------------------------------------------------------------- unknown

def test_the_rejection_threshold_accepts_the_asked_share_of_validation_images():
    scores = np.random.default_rng(8).random(1000)
    for rate in (0.0, 0.05, 0.2):
        cut = rejection.threshold(scores, rate)
        assert (scores >= cut).mean() >= 1 - rate
        assert (scores >= cut).mean() <= 1 - rate + 1 / 1000
    with pytest.raises(ValueError):
        rejection.threshold(scores, 1.0)


def test_msp_and_energy_scores_and_the_ood_figures():
    logits = np.array([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    msp = rejection.rejection_scores(logits, 1.0, "msp")
    assert msp == pytest.approx(calibration.softmax(logits).max(1))
    energy = rejection.rejection_scores(logits, 2.0, "energy")
    assert energy == pytest.approx(2.0 * np.log(np.exp(logits / 2.0).sum(1)))
    figures = rejection.ood_figures(np.linspace(1, 2, 100), np.linspace(0, 0.5, 50))
    assert figures["auroc"] == 1.0 and figures["fpr_at_95_tpr"] == 0.0
    figures = rejection.ood_figures(np.linspace(0, 1, 100), np.linspace(0, 1, 100))
    assert figures["auroc"] == pytest.approx(0.5, abs=0.01) and figures["fpr_at_95_tpr"] > 0.9


def test_risk_coverage_accepts_the_most_familiar_first():
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    correct = np.array([1, 1, 0, 0])
    curve = rejection.risk_coverage(scores, correct, points=4)
    assert [p["accuracy"] for p in curve] == [1.0, 1.0, pytest.approx(2 / 3), 0.5]
    assert rejection.aurc(scores, correct) == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)


# ----------------------------------------------------------------------------- the fitted record

def test_fit_trust_with_a_conformal_share_and_the_record_round_trip():
    logits, labels = _synthetic(1_000, seed=9)
    trust = fit_trust(logits, labels, fraction=0.3, seed=1, conformal_score="raps", reject_score="energy")
    assert len(trust.conformal_scores) == 300 and len(trust.msp_scores) == 700
    assert "0.3" in trust.conformal_on
    again = Trust.from_record(json.loads(json.dumps(trust.to_record())), "model.safetensors")
    assert again == trust
    assert trust.sets(calibration.softmax(logits[:5], trust.temperature), 0.9) == \
        again.sets(calibration.softmax(logits[:5], again.temperature), 0.9)
    with pytest.raises(TrustError, match="strictly between 0 and 1"):
        trust.sets(calibration.softmax(logits[:5]), 1.5)
    with pytest.raises(TrustError, match="calibration_fraction"):
        fit_trust(logits[:1], labels[:1], fraction=0.5)


def test_a_hostile_trust_record_is_one_line_naming_the_field():
    from cnnlab.errors import CheckpointError

    logits, labels = _synthetic(100, seed=10)
    record = fit_trust(logits, labels).to_record()
    with pytest.raises(CheckpointError, match=r"model.safetensors: field 'trust': field 'temperature'"):
        Trust.from_record({**record, "temperature": -1.0}, "model.safetensors")
    with pytest.raises(CheckpointError, match="conformal_scores"):
        Trust.from_record({**record, "conformal_scores": ["x"]}, "model.safetensors")


def test_accuracy_is_unchanged_by_the_temperature_and_figures_improve_on_an_overconfident_model():
    logits, labels = _synthetic(6_000, seed=11)
    logits = logits * 2.5  # over-confident
    trust = fit_trust(logits[:2000], labels[:2000])
    fields, curves = trust_figures(trust, logits[2000:], labels[2000:])
    assert (calibration.softmax(logits[2000:], trust.temperature).argmax(1) == logits[2000:].argmax(1)).all()
    assert fields["test_ece"] < fields["test_ece_uncalibrated"] / 3
    assert fields["test_nll"] < fields["test_nll_uncalibrated"]
    for level in (80, 90, 95):
        assert fields[f"test_coverage_{level}"] >= level / 100 - 0.03
    assert fields["test_accepted_share"] == pytest.approx(0.95, abs=0.03)
    assert len(curves["reliability"]) == 15 and curves["coverage"]["0.9"]["by_size"]


# ----------------------------------------------------------------------------- through a real run

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A BaseNet trained for two epochs on an easy task: its folder and data."""
    from cnnlab.config import load_experiment
    from cnnlab.studies import run_experiment

    root = tmp_path_factory.mktemp("trust")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        patch.setenv("CNNLAB_ENGINE", "torch")
        data = write_easy_npz(root / "npz")
        cfg = load_experiment("basenet", overrides={"data.path": str(data), "train.epochs": 2, "seeds": [1],
                                                    "device": "cpu", "out": str(root / "runs")})
        folder = run_experiment(cfg, progress=False, log=lambda s: None)
    return {"folder": folder, "run": folder / "seed-1", "data": data, "root": root}


def test_a_run_records_calibration_in_results_weights_and_report(trained_run):
    from cnnlab.inference import load_trained
    from cnnlab.studies.report import write_report

    run = trained_run["run"]
    results = json.loads((run / "results.json").read_text())
    for key in ("temperature", "test_nll", "test_ece", "test_adaptive_ece", "test_brier", "test_ece_uncalibrated",
                "val_ece", "val_nll", "test_coverage_90", "test_set_size_90", "test_accepted_share", "test_aurc"):
        assert results[key] is not None, key
    assert results["calibration"] == "temperature"
    trained = load_trained(run)
    assert trained.trust is not None and trained.trust.temperature == pytest.approx(results["temperature"])
    assert len(trained.trust.conformal_scores) == results["num_val"]
    curves = json.loads((run / "trust.json").read_text())
    assert curves["figures"]["test_ece"] == pytest.approx(results["test_ece"])
    page = write_report([trained_run["folder"]], trained_run["root"] / "page.html").read_text()
    assert "Can I trust its probabilities?" in page and "coverage by set size" in page
    assert "reliability diagram, before and after" in page and "accuracy of what is accepted" in page


def test_the_temperature_and_the_rules_never_read_the_test_split(trained_run, tmp_path):
    """Two Learners on the same training and validation data, one with the test split's labels scrambled and
    its images inverted: the same temperature, conformal scores and rejection scores."""
    from cnnlab.config import load_experiment
    from cnnlab.data.images import ImageSet
    from cnnlab.studies.experiment import load_data
    from cnnlab.training.learner import Learner

    cfg = load_experiment("basenet", overrides={"data.path": str(trained_run["data"]), "train.epochs": 1,
                                                "device": "cpu"})
    splits = load_data(cfg, log=lambda s: None)
    test = splits.test
    scrambled = ImageSet(255 - test.images, torch.roll(test.labels, 3))
    records = []
    for split_test in (test, scrambled):
        learner = Learner(cfg, dataclasses.replace(splits, test=split_test), seed=1, log=lambda s: None,
                          progress=False)
        results = learner.run()
        records.append((learner.trust.to_record(), results))
    assert records[0][0] == records[1][0]
    assert records[0][1]["test_ece"] != records[1][1]["test_ece"]  # the test figures did see the difference


def test_predict_serve_and_an_exported_graph_answer_the_same_calibrated_figures(trained_run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastapi.testclient import TestClient

    from cnnlab.inference import load_trained
    from cnnlab.inference.export import export_model
    from cnnlab.inference.predict import predict, trust_answers
    from cnnlab.inference.serve import create_app
    from PIL import Image

    images = np.load(trained_run["data"] / "test.npz")["images"][:12]
    files = []
    for i, image in enumerate(images):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path)
        files.append(path)
    torch_model = load_trained(trained_run["run"], engine="torch")
    models = {"torch": torch_model}
    export_model(torch_model, tmp_path / "model.onnx", fmt="onnx")
    models["onnx"] = load_trained(tmp_path / "model.onnx", engine="onnxruntime")
    try:
        import openvino  # noqa: F401
    except ImportError:
        pass
    else:
        export_model(torch_model, tmp_path / "model.xml", fmt="openvino")
        models["openvino"] = load_trained(tmp_path / "model.xml", engine="openvino")
    answers = {}
    for name, model in models.items():
        assert model.trust == torch_model.trust, name  # the record travels with the graph
        predictions, _ = predict([model], files, workers=0, progress=False)
        found = trust_answers(model, predictions, coverage=0.9, reject_rate=0.2)
        answers[name] = (torch.stack([p.probabilities for p in predictions]), found.sets, found.decisions)
    for name in models:
        assert torch.allclose(answers["torch"][0], answers[name][0], atol=1e-5), name
        assert answers["torch"][1:] == answers[name][1:], name
    # the Python API (TrainedModel, as cnnlab.Learner hands it out) answers the same for the same files
    assert torch_model.prediction_sets(files, coverage=0.9) == answers["torch"][1]
    assert torch_model.decisions(files, reject_rate=0.2) == answers["torch"][2]
    # the probabilities are the temperature's, not the raw softmax
    logits = torch_model.batch_logits(torch.as_tensor(images).permute(0, 3, 1, 2).contiguous())
    expected = torch.softmax(logits / torch_model.trust.temperature, 1)
    assert torch.allclose(answers["torch"][0], expected, atol=1e-5)

    with TestClient(create_app(trained_run["run"], engine="torch")) as client:
        uploads = [("file", (f.name, f.read_bytes(), "image/png")) for f in files]
        body = client.post("/v1/predict", files=uploads, params={"top_k": 3, "coverage": 0.9,
                                                                 "reject_rate": 0.2}).json()
        served = body["predictions"]
        assert [p["set"] for p in served] == answers["torch"][1]
        assert [p["decision"] for p in served] == answers["torch"][2]
        assert all(p["unknown"] == (p["decision"] == "unknown") for p in served)
        top = torch.tensor([p["top_k"][0]["prob"] for p in served])
        assert torch.allclose(top, answers["torch"][0].max(1).values, atol=1e-5)
        plain = client.post("/v1/predict", files=uploads[:1]).json()["predictions"][0]
        assert set(plain) == {"file", "top_k"}  # an old client's answer is unchanged
        assert client.post("/v1/predict", files=uploads[:1], params={"coverage": 1.5}).status_code == 422
        card = client.get("/v1/model").json()
        assert card["calibration"]["temperature"] == pytest.approx(torch_model.trust.temperature)


def test_predict_cli_writes_sets_and_decisions_and_refuses_what_it_cannot_answer(trained_run, tmp_path, capsys):
    from PIL import Image

    from cnnlab.cli.main import main

    images = np.load(trained_run["data"] / "test.npz")["images"][:5]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained_run["run"]), str(folder), "--coverage", "0.9", "--reject-rate", "0.1",
                 "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and all(r["set"] and r["decision"] for r in rows)
    assert all(r["set"].split(";")[0] == r["pred_1"] for r in rows)
    printed = capsys.readouterr().out
    assert "sets:" in printed and "unknown:" in printed
    # without the options, the CSV's columns are the old contract
    plain = tmp_path / "plain.csv"
    main(["predict", str(trained_run["run"]), str(folder), "--out", str(plain), "--workers", "0", "--no-progress"])
    header = plain.read_text().splitlines()[0].split(",")
    assert header[0] == "path" and header[-1].startswith("prob_") and "set" not in header and "decision" not in header
    assert main(["predict", str(trained_run["folder"]), str(folder), "--ensemble", "--coverage", "0.9"]) == 2
    assert "ensemble" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's one line: "argument --coverage: expected ..."
        main(["predict", str(trained_run["run"]), str(folder), "--coverage", "1.5"])
    assert stop.value.code == 2 and "--coverage" in capsys.readouterr().err


def test_weights_without_a_trust_record_say_why_coverage_cannot_be_answered(trained_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from cnnlab.errors import RunError
    from cnnlab.inference import load_trained
    from cnnlab.inference.predict import Prediction, trust_answers

    source = trained_run["run"] / "model.safetensors"
    from safetensors import safe_open
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    record = json.loads(metadata["cnnlab"])
    record.pop("trust")
    old = tmp_path / "model.safetensors"
    save_file(load_file(str(source)), str(old), metadata={**metadata, "cnnlab": json.dumps(record)})
    model = load_trained(old)
    assert model.trust is None
    prediction = Prediction(Path("x.png"), torch.full((len(model.class_names),), 1 / len(model.class_names)), None,
                            torch.zeros(len(model.class_names)))
    with pytest.raises(RunError, match="before 0.13, or without a validation split"):
        trust_answers(model, [prediction], coverage=0.9, reject_rate=None)


def test_ood_command_measures_both_scores_against_foreign_images(trained_run, tmp_path, capsys):
    from PIL import Image

    from cnnlab.cli.main import main

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):  # noise: nothing like the easy task's images
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(foreign / f"{i}.png")
    out = tmp_path / "ood.json"
    assert main(["ood", str(trained_run["run"]), "--images", str(foreign), "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 0
    figures = json.loads(out.read_text())
    assert set(figures["scores"]) == {"msp", "energy"}
    for row in figures["scores"].values():
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["fpr_at_95_tpr"] <= 1.0
    assert figures["out_images"] == 20 and figures["in_images"] > 0
    assert "AUROC" in capsys.readouterr().out
    assert main(["ood", str(trained_run["run"]), "--images", str(foreign), "--out", str(out)]) == 2  # never overwrites
