"""The engine's knobs, each checked against a value computed independently."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from conftest import interrupt_after

from cnnlab.config import PhaseConfig, TrainConfig, load_experiment
from cnnlab.data import load_splits
from cnnlab.errors import ConfigError, RunInterrupted
from cnnlab.models import create_model
from cnnlab.studies import resume, run_experiment
from cnnlab.training import Learner
from cnnlab.training.runtime import autocast as autocast_context, resolve_precision
from cnnlab.training.optim import build_optimizer, build_scheduler
from cnnlab.training.phases import freeze_for_phase, set_train_mode


def _metrics(folder):
    with open(folder / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_warm_up_then_cosine_schedule_values():
    tc = TrainConfig(schedule="cosine", warmup_epochs=1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], tc.optimizer)  # lr 1e-3
    scheduler = build_scheduler(optimizer, tc, steps_per_epoch=4, epochs=3)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warm = [1e-3 * k / 4 for k in (1, 2, 3, 4)]  # linear over the first epoch's 4 steps
    cosine = [1e-3 * 0.5 * (1 + math.cos(math.pi * (step - 4) / 8)) for step in range(4, 12)]
    assert seen == pytest.approx(warm + cosine, rel=1e-12)
    constant = build_scheduler(build_optimizer([param], tc.optimizer), TrainConfig(), steps_per_epoch=4, epochs=3)
    assert constant.get_last_lr() == [1e-3]


@pytest.mark.parametrize("frozen_bn, stats_move", [("eval", False), ("train", True)])
def test_frozen_batchnorm_statistics_follow_the_policy(frozen_bn, stats_move):
    model = create_model("basenet_pp", num_classes=4)
    phase = PhaseConfig(trainable=["head"], frozen_bn=frozen_bn)
    freeze_for_phase(model, phase)
    set_train_mode(model, phase)
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.rand(8, 3, 32, 32))
    assert bn.training is stats_move
    assert (not torch.equal(before, bn.running_mean)) is stats_move
    assert model.head.training  # the trained part is always in train mode


def _frozen_lr_run(npz_data, tmp_path, **overrides):
    """One epoch with a learning rate too small to move any weight: the loss is the initial model's."""
    cfg = load_experiment("basenet", overrides={
        "data.path": str(npz_data), "train.epochs": 1, "train.batch_size": 32, "device": "cpu", "seeds": [3],
        "train.optimizer": {"name": "sgd", "lr": 1e-30, "momentum": 0.0}, "train.channels_last": False,
        "out": str(tmp_path / "runs"), **overrides})
    splits = load_splits(cfg.data)
    trainer = Learner(cfg, splits, seed=3, log=lambda s: None, progress=False)
    with torch.no_grad():
        x = lambda split: split.images.float() / 255  # noqa: E731  (normalize: none)
        train_logits, val_logits = trainer.model(x(splits.train)), trainer.model(x(splits.val))
    folder = run_experiment(cfg, progress=False, log=lambda s: None)
    return _metrics(folder / "seed-3")[0], (train_logits, splits.train.labels), (val_logits, splits.val.labels)


def test_label_smoothing_applies_to_the_training_loss_only(npz_data, tmp_path):
    row, (train_logits, train_labels), (val_logits, val_labels) = _frozen_lr_run(
        npz_data, tmp_path, **{"train.label_smoothing": 0.1})
    assert float(row["train_loss"]) == pytest.approx(
        float(F.cross_entropy(train_logits, train_labels, label_smoothing=0.1)), rel=1e-5)
    assert float(row["val_loss"]) == pytest.approx(float(F.cross_entropy(val_logits, val_labels)), rel=1e-5)
    plain = F.cross_entropy(train_logits, train_labels)
    # The smoothing made a difference far beyond the tolerance of the match above (an untrained
    # model's predictions are near uniform, where smoothing changes the loss least).
    assert abs(float(row["train_loss"]) - float(plain)) > 10 * 1e-5 * float(plain)


def test_auto_precision_is_bf16_only_on_cpus_that_have_it_in_hardware(tmp_path, monkeypatch):
    from cnnlab.training import device, runtime

    sapphire = tmp_path / "cpuinfo-sapphire-rapids"
    sapphire.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    epyc = tmp_path / "cpuinfo-epyc"
    epyc.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma avx512f\n")
    assert device.cpu_has_native_bf16(str(sapphire)) and not device.cpu_has_native_bf16(str(epyc))
    assert not device.cpu_has_native_bf16(str(tmp_path / "no-such-file"))  # macOS, Windows: fp32
    cpu = torch.device("cpu")
    resolve = runtime.resolve_precision
    monkeypatch.delenv("CNNLAB_CPU_BF16")  # the suite's own setting (conftest): the detection decides
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert resolve("auto", cpu) == "bf16" and resolve("off", cpu) == "fp32"
    monkeypatch.setenv("CNNLAB_CPU_BF16", "0")  # overrides the detection either way
    assert resolve("auto", cpu) == "fp32" and resolve("bf16", cpu) == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setenv("CNNLAB_CPU_BF16", "1")
    assert resolve("auto", cpu) == "bf16"
    monkeypatch.setenv("CNNLAB_CPU_BF16", "yes")
    with pytest.raises(ConfigError, match=r"\$CNNLAB_CPU_BF16: expected 0 or 1, got 'yes'"):
        resolve("auto", cpu)
    from cnnlab.config import load_experiment
    from cnnlab.studies.preflight import check_experiment
    with pytest.raises(ConfigError, match=r"\$CNNLAB_CPU_BF16"):  # before a run folder is made
        check_experiment(load_experiment("basenet"))
    check_experiment(load_experiment("basenet", overrides={"train.amp": "off"}))  # not read: no error
    monkeypatch.delenv("CNNLAB_CPU_BF16")
    assert resolve("auto", cpu) == "fp32" and resolve("bf16", cpu) == "bf16" and resolve("fp16", cpu) == "fp16"


def test_auto_precision_on_cuda_is_bf16_from_ampere_on_and_fp16_with_a_scaler_before(monkeypatch):
    """A T4 (7.5, the free Colab GPU the lab ran on) or a V100 (7.0) gets fp16 with a loss scaler; an
    A100 (8.0) or H100 (9.0) bf16; MPS fp32 (checked with the capability the driver would report)."""
    from cnnlab.training import runtime

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, expected in (((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index, c=capability: c)
        assert runtime.resolve_precision("auto", cuda) == expected, capability
        assert runtime.resolve_precision("off", cuda) == "fp32"
        assert (runtime.grad_scaler(cuda, expected) is not None) is (expected == "fp16")
    assert runtime.resolve_precision("auto", torch.device("mps")) == "fp32"
    assert runtime.resolve_precision("fp16", torch.device("mps")) == "fp32"


def test_bf16_autocast_on_the_cpu(npz_data, tmp_path):
    cpu = torch.device("cpu")
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("off", cpu) == "fp32"
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast_context(cpu, True):
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16
    with autocast_context(cpu, False):
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.float32
    fp32, _, _ = _frozen_lr_run(npz_data, tmp_path / "a")
    bf16, (train_logits, labels), _ = _frozen_lr_run(npz_data, tmp_path / "b", **{"train.amp": "bf16"})
    exact = float(F.cross_entropy(train_logits, labels))
    assert float(fp32["train_loss"]) == pytest.approx(exact, rel=1e-5)
    # bf16 keeps 8 bits of mantissa: close to the fp32 loss, and not bit-identical (autocast was on)
    assert float(bf16["train_loss"]) == pytest.approx(exact, rel=2e-2) and bf16["train_loss"] != fp32["train_loss"]


def test_compile_trains_the_same_model(npz_data, tmp_path, monkeypatch):
    """train.compile wraps the model in torch.compile. Dynamo's tracing is exercised with the
    aot_eager backend (no C++ toolchain, seconds instead of a minute); results must match eager."""
    calls = []
    real = torch.compile

    def compile_spy(model, **kwargs):
        calls.append(type(model).__name__)
        return real(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_spy)
    common = {"data.path": str(npz_data), "train.epochs": 2, "train.batch_size": 32, "device": "cpu", "seeds": [2]}
    eager = run_experiment(load_experiment("basenet", overrides={**common, "out": str(tmp_path / "e")}),
                           progress=False, log=lambda s: None)
    assert calls == []
    compiled = run_experiment(load_experiment("basenet", overrides={**common, "out": str(tmp_path / "c"),
                                                                    "train.compile": True}),
                              progress=False, log=lambda s: None)
    assert calls == ["ConvNet"]
    for a, b in zip(_metrics(eager / "seed-2"), _metrics(compiled / "seed-2")):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6)


def test_resume_on_another_device_setting(npz_data, tmp_path):
    """Interrupted under device auto, resumed with --device cpu: the resumed config says cpu and the
    run ends as an uninterrupted one does (on a GPU machine the same path moves the state across)."""
    common = {"data.path": str(npz_data), "train.epochs": 3, "train.batch_size": 32, "seeds": [4], "device": "auto"}
    whole = run_experiment(load_experiment("basenet", overrides={**common, "out": str(tmp_path / "a")}),
                           progress=False, log=lambda s: None)

    with pytest.raises(RunInterrupted):
        run_experiment(load_experiment("basenet", overrides={**common, "out": str(tmp_path / "b")}),
                       progress=False, log=interrupt_after(1))
    (folder,) = (tmp_path / "b" / "basenet").iterdir()
    resume(folder, device="cpu", progress=False, log=lambda s: None)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert drop(_metrics(folder / "seed-4")) == drop(_metrics(whole / "seed-4"))
    assert json.loads((folder / "seed-4" / "results.json").read_text())["device"] == "cpu"


def test_classic_heads_report_what_scikit_learn_computes_on_the_same_features(birds_lab, tmp_path):
    from cnnlab.studies.classic import run_classic_heads
    from cnnlab.studies.experiment import load_data

    cfg = load_experiment("birdnet_v0", overrides={
        "data.path": str(birds_lab), "data.image_size": 64, "data.workers": 0, "device": "cpu", "seeds": [1, 2],
        "model_args.backbone": "efficientnet_lite0", "model_args.weights": "none",
        "train.feature_cache_dir": str(tmp_path / "fc")})
    splits = load_data(cfg, log=lambda s: None)
    results = run_classic_heads(cfg, splits, ["logreg", "linear_svm", "knn"], log=lambda s: None)
    # The features, read back from the cache the heads used; fitted here independently.
    from safetensors.torch import load_file

    stored = [load_file(str(p)) for p in sorted((tmp_path / "fc").glob("*.safetensors"))]
    by_size = {len(s["labels"]): (s["features"].float().numpy(), s["labels"].numpy()) for s in stored}
    train, test = by_size[len(splits.train)], by_size[len(splits.test)]
    makers = {"logreg": lambda s: LogisticRegression(max_iter=3000, C=1.0),
              "linear_svm": lambda s: LinearSVC(C=0.01, max_iter=20000, random_state=s),
              "knn": lambda s: KNeighborsClassifier(n_neighbors=10, metric="cosine", weights="distance")}
    assert len(results) == 6
    for row in results:
        model = make_pipeline(StandardScaler(), makers[row["head"]](row["seed"])).fit(*train)
        assert row["test_acc"] == float(np.mean(model.predict(test[0]) == test[1]))
