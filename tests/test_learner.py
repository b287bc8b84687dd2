"""The Learner: built from parts, callbacks at every moment, the runtime resolved once, lr-find on the real step,
fp16 with a scaler, and the Python API a notebook lives in."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.config import load_experiment
from cnnlab.data import load_splits, num_batches
from cnnlab.errors import ConfigError, DataError, RunInterrupted
from cnnlab.models import create_model
from cnnlab.studies import resume, run_experiment
from cnnlab.training import Callback, CancelFit, CancelPhase, Learner, Runtime, train_seed
from cnnlab.training.callbacks import HOOKS, format_duration, remaining_seconds
from conftest import interrupt_after


def tiny(npz_data, tmp_path, **overrides):
    base = {"data.path": str(npz_data), "train.epochs": 2, "train.batch_size": 32, "seeds": [1],
            "out": str(tmp_path / "runs"), "device": "cpu"}
    base.update(overrides)
    return load_experiment("basenet", overrides={k: v for k, v in base.items() if v is not None})


def _metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(handle)]


class Recorder(Callback):
    """Writes down every hook it sees, and what the run folder held when each epoch ended."""

    def __init__(self, folder: Path | None = None):
        self.events, self.folder, self.rows_on_disk = [], folder, []


def _recording(hook: str):
    def record(self, learner, *args):
        self.events.append(hook)
        if hook == "on_epoch_end" and self.folder is not None:
            self.rows_on_disk.append(len(_metrics(self.folder)))
    return record


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording(_hook))


def test_a_user_callback_sees_every_hook_in_order_after_the_epoch_was_written(npz_data, tmp_path):
    # train.accumulate: 2 slices a batch, one optimizer step: before/after_step still come once a batch
    cfg = tiny(npz_data, tmp_path, **{"train.accumulate": 2})
    splits = load_splits(cfg.data)
    folder = tmp_path / "run"
    folder.mkdir()
    user = Recorder(folder)
    results = train_seed(cfg, folder, splits, seed=1, progress=False, log=lambda s: None, callbacks=[user])
    batches = num_batches(len(splits.train), 32)
    epoch = ["on_epoch_start", *["on_batch_start", "before_step", "after_step", "on_batch_end"] * batches,
             "on_epoch_end"]
    assert user.events == ["on_fit_start", "on_phase_start", *epoch * 2, "on_phase_end", "on_fit_end", "on_test_end"]
    assert user.rows_on_disk == [1, 2]  # metrics.csv (and the checkpoint) already held the epoch it was shown
    assert 0 <= results["test_acc"] <= 1


class StopAt(Callback):
    def __init__(self, epoch: int, what: type):
        self.epoch, self.what = epoch, what

    def on_epoch_end(self, learner, row):
        if row["epoch"] == self.epoch:
            raise self.what


def test_callbacks_end_a_phase_or_the_fit_and_the_learner_takes_a_model_it_is_handed(npz_data, tmp_path):
    cfg = tiny(npz_data, tmp_path, **{"model": "basenet_pp", "train.epochs": None, "train.phases": [
        {"name": "head", "epochs": 3, "trainable": ["head"]}, {"name": "all", "epochs": 2, "trainable": ["all"]}]})
    splits = load_splits(cfg.data)
    learner = Learner(cfg, splits, seed=1, log=lambda s: None, progress=False, callbacks=[StopAt(1, CancelPhase)])
    results = learner.run()  # no run folder: the figures come back, nothing is written
    assert [(r["epoch"], r["phase"]) for r in learner.history] == [(1, "head"), (4, "all"), (5, "all")]
    assert results["epochs_trained"] == 3 and not list(tmp_path.glob("runs/**/*.csv"))
    model = create_model("basenet", num_classes=4)
    learner = Learner(tiny(npz_data, tmp_path, **{"train.epochs": 4}), splits, seed=1, model=model,
                      log=lambda s: None, progress=False, callbacks=[StopAt(2, CancelFit)])
    assert learner.model is model
    learner.fit()
    assert [r["epoch"] for r in learner.history] == [1, 2]


def test_keep_best_early_stopping_and_progress_are_callbacks_with_an_eta(npz_data, tmp_path):
    from cnnlab.training.callbacks import EarlyStopping, KeepBest, Progress

    cfg = tiny(npz_data, tmp_path, **{"train.keep_best": "val_loss", "train.early_stopping.monitor": "val_acc",
                                      "train.early_stopping.patience": 1})
    learner = Learner(cfg, load_splits(cfg.data), seed=1, log=lambda s: None, progress=False)
    kinds = [type(c) for c in learner.callbacks]
    assert kinds == [KeepBest, Progress, EarlyStopping]  # in their order: keep, (write), log, stop
    assert Learner(tiny(npz_data, tmp_path), load_splits(cfg.data), seed=1, progress=False,
                   standard=False).callbacks.items == []

    class Fake:  # what remaining_seconds reads of a learner
        epochs = 10
        history = [{"epoch": e, "phase": "probe", "epoch_time_s": 0.2} for e in (1, 2, 3)] + \
                  [{"epoch": e, "phase": "tune", "epoch_time_s": t} for e, t in ((4, 40.0), (5, 50.0), (6, 30.0))]
    # the time left follows the current phase's median epoch, not the cached-feature epochs before it
    assert remaining_seconds(Fake, Fake.history[-1]) == 4 * 40.0
    assert remaining_seconds(Fake, {"epoch": 10, "phase": "tune", "epoch_time_s": 1}) is None
    assert [format_duration(s) for s in (5, 75, 3725)] == ["5s", "1m15s", "1h02m"]


def test_fp16_trains_basenet_on_the_cpu_with_a_scaler_and_resumes_exactly(npz_data, tmp_path):
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, AttributeError, TypeError) as exc:
        pytest.skip(f"this torch has no CPU fp16 autocast or scaler ({exc})")
    cfg = tiny(npz_data, tmp_path, **{"train.amp": "fp16", "train.epochs": 3, "seeds": [2], "out": str(tmp_path / "a")})
    whole = run_experiment(cfg, progress=False, log=lambda s: None) / "seed-2"
    results = json.loads((whole / "results.json").read_text())
    assert results["precision"] == "fp16"
    saved = torch.load(whole / "checkpoint.pt", weights_only=True)
    assert saved["grad_scaler"]["scale"] > 0  # the scaler's state goes with every checkpoint
    fp32 = json.loads((run_experiment(tiny(npz_data, tmp_path, **{"train.epochs": 3, "seeds": [2],
                                                                  "out": str(tmp_path / "c")}),
                                      progress=False, log=lambda s: None) / "seed-2" / "results.json").read_text())
    assert fp32["test_loss"] != results["test_loss"]  # fp16 autocast was on
    assert fp32["test_loss"] == pytest.approx(results["test_loss"], rel=0.05)
    cfg.out = str(tmp_path / "b")
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, progress=False, log=interrupt_after(2))
    (group,) = (tmp_path / "b" / "basenet").iterdir()
    resume(group, progress=False, log=lambda s: None)
    assert _metrics(group / "seed-2") == _metrics(whole)
    again = json.loads((group / "seed-2" / "results.json").read_text())
    assert (again["test_loss"], again["test_acc"]) == (results["test_loss"], results["test_acc"])


def test_lr_find_steps_as_the_run_does_accumulating_and_averaging(npz_data, tmp_path, monkeypatch):
    from cnnlab.studies import lr_find as module
    from cnnlab.training.ema import WeightAverage
    from cnnlab.training.steps import OptimizerStep

    seen = {"steps": [], "averaged": 0}
    original_step, original_update = OptimizerStep.__call__, WeightAverage.update

    def step(self, model, loss_of, batch):
        seen["steps"].append((self.accumulate, len(self.slices(batch))))
        return original_step(self, model, loss_of, batch)

    def update(self, *args, **kwargs):
        seen["averaged"] += 1
        return original_update(self, *args, **kwargs)

    monkeypatch.setattr(OptimizerStep, "__call__", step)
    monkeypatch.setattr(WeightAverage, "update", update)
    result = module.lr_find("basenet", overrides={"data.path": str(npz_data), "device": "cpu", "train.accumulate": 2,
                                                  "train.ema": 0.9, "train.batch_size": 16},
                            steps=12, start=1e-5, end=1e-2, out=str(tmp_path / "runs"), log=lambda s: None)
    assert result["steps_run"] == len(seen["steps"]) == seen["averaged"] <= 12
    assert all(s == (2, 2) for s in seen["steps"])  # every step cut its batch in two, as the run's would
    rows = list(csv.DictReader(open(Path(result["folder"]) / "lr_find.csv")))
    assert float(rows[0]["lr"]) == pytest.approx(1e-5) and len(rows) == result["steps_run"]


def test_runtime_is_resolved_once_from_the_configuration(npz_data, tmp_path, monkeypatch):
    runtime = Runtime.resolve(tiny(npz_data, tmp_path, **{"train.amp": "off", "train.threads": 1}))
    assert (runtime.device.type, runtime.precision, runtime.threads, runtime.engine) == ("cpu", "fp32", 1, "torch")
    assert runtime.grad_scaler() is None and not runtime.amp
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda' was asked for"):
            Runtime.resolve(tiny(npz_data, tmp_path, device="cuda"))


def test_import_cnnlab_leaves_the_environment_as_it_was():
    code = ("import os, json; before = dict(os.environ); import cnnlab; cnnlab.Learner; cnnlab.Runtime; "
            "print(json.dumps(dict(os.environ) == before))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "true"


def test_the_cli_sets_the_short_openmp_spin_for_itself_only():
    code = ("import os; from cnnlab.cli.main import main\n"
            "try: main(['list'])\nexcept SystemExit: pass\nprint('SPIN', os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "SPIN 1000" in done.stdout, done.stderr
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # a user's own choice is left alone
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "SPIN None" in done.stdout, done.stderr


def test_every_experiment_command_takes_the_same_experiment_options():
    from cnnlab.cli.parser import build_parser

    parser = build_parser()
    common = ["--data", "d", "--source", "auto", "--backbone", "efficientnet_lite0", "--weights", "none",
              "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--set", "train.threads=1"]
    for command in (["run", "birdnet_v0"], ["ablation", "basenet_pp"], ["compare", "birdnet_v0", "birdnet_v1"],
                    ["tune", "birdnet_v0", "--space", "s.yaml"], ["lr-find", "birdnet_v0"]):
        args = parser.parse_args([*command, *common])
        assert (args.backbone, args.epochs, args.batch_size, args.device) == ("efficientnet_lite0", 2, 8, "cpu")
    from cnnlab.cli.main import _study_overrides

    args = parser.parse_args(["tune", "birdnet_v0", "--space", "s.yaml", "--seeds", "3", *common])
    overrides, origins = _study_overrides(args)
    assert overrides["model_args.backbone"] == "efficientnet_lite0" and origins["train.epochs"] == "--epochs"
    assert "seeds" not in overrides  # tune's --seeds are its trials' seeds, not an override


def test_a_set_typo_names_the_option_not_the_preset_file():
    from cnnlab.cli.main import main

    with pytest.raises(ConfigError) as caught:
        main(["--debug", "run", "basenet", "--set", "train.optimzer.lr=0.1"])
    assert str(caught.value).startswith("--set train.optimzer.lr: key 'train.optimzer': unknown key")
    assert ".yaml" not in str(caught.value)


# ----------------------------------------------------------------------------- the Python API


def test_the_python_api_trains_reports_predicts_and_exports(npz_data, tmp_path):
    import cnnlab

    learn = cnnlab.Learner.from_experiment("basenet", data=npz_data, epochs=2, seeds=[7], device="cpu",
                                           out=tmp_path / "runs", overrides={"train.batch_size": 32})
    seen = Recorder()
    learn.callbacks.append(seen)  # a notebook's callback: its seeds train in this process
    result = learn.fit(progress=False, log=lambda s: None)
    assert isinstance(result, cnnlab.Result) and result.runs[0]["seed"] == 7
    assert result.test_acc == result.runs[0]["test_acc"] and result.folder == learn.folder
    assert seen.events.count("on_epoch_end") == 2
    assert "test accuracy" in str(result)
    # the report of a one-seed run of seed 7 shows its learning curves
    page = learn.report().read_text()
    assert "seed-7: loss and accuracy per epoch" in page and "data:image/png" in page
    splits = load_splits(learn.cfg.data)
    images = splits.test.images[:5]  # uint8 NCHW
    expected = learn.trained().batch_probabilities(images)
    nhwc = images.permute(0, 2, 3, 1)
    for given in (images, nhwc, nhwc.numpy(), list(nhwc.numpy()), [Image.fromarray(a) for a in nhwc.numpy()],
                  images.float() / 255):
        assert torch.allclose(learn.probabilities(given), expected, atol=1e-6), type(given)
    top = learn.predict(nhwc.numpy()[:2], top_k=2)
    assert len(top) == 2 and len(top[0]) == 2 and top[0][0][0] in splits.class_names
    with pytest.raises(DataError, match="image 0: float pixels must lie in \\[0, 1\\]"):
        learn.probabilities(images.float())
    with pytest.raises(DataError, match="expected an image file path, a PIL image"):
        learn.probabilities([{"not": "an image"}])
    pytest.importorskip("onnxruntime")
    out = learn.export(tmp_path / "model.onnx")
    assert out.is_file() and out.stat().st_size > 1000
    again = cnnlab.Learner.from_folder(learn.folder)
    assert again.result.test_acc == result.test_acc
    assert torch.allclose(again.probabilities(nhwc.numpy()), expected, atol=1e-6)


class SmallNet(nn.Module):
    """What a notebook user writes: no cnnlab base class, the classifier its last Linear."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.features(x))


class SoftmaxNet(SmallNet):
    def forward(self, x):
        return torch.softmax(self.fc(self.features(x)), 1)  # does more after its last layer


def test_any_module_a_user_wrote_trains_with_its_head_found_and_honest_seeds(npz_data, tmp_path):
    import cnnlab

    module = SmallNet()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    learn = cnnlab.Learner(module, data=npz_data, epochs=2, seeds=[1, 2], device="cpu", out=tmp_path / "runs")
    result = learn.fit(progress=False, log=lambda s: None)
    assert len(result.runs) == 2 and result.runs[0]["test_loss"] != result.runs[1]["test_loss"]  # seeds differ
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # the user's module untouched
    assert "fc" in (learn.folder / "seed-1" / "model.txt").read_text() or "Linear" in \
        (learn.folder / "seed-1" / "model.txt").read_text()
    assert learn.predict(np.zeros((32, 32, 3), np.uint8), top_k=1)[0][0][0].startswith("class")
    # the range test of this very experiment (no preset of its name) on its own step
    found = learn.lr_find(steps=8, log=lambda s: None)
    assert found["steps_run"] <= 8 and found["experiment"] == learn.cfg.experiment_name
    with pytest.raises(ConfigError, match="name the layer that makes the logits with head="):
        cnnlab.Learner(SoftmaxNet(), data=npz_data)
    with pytest.raises(ConfigError, match="makes 3 outputs but the data has 4 classes"):
        cnnlab.Learner(SmallNet(classes=3), data=npz_data, epochs=1, device="cpu", out=tmp_path / "r2").fit(
            progress=False, log=lambda s: None)
    with pytest.raises(ConfigError, match="head='nope': no such submodule"):
        cnnlab.Learner(SmallNet(), data=npz_data, head="nope")


def test_python_prediction_of_a_photo_of_another_size_equals_cnnlab_predict(birds_lab, tmp_path):
    import cnnlab
    from cnnlab.cli.main import main

    learn = cnnlab.Learner.from_experiment(
        "birdnet_v1", data=birds_lab, backbone="efficientnet_lite0", weights="none", seeds=[1], device="cpu",
        out=tmp_path / "runs", overrides={"data.image_size": 64, "data.resize": "crop", "data.workers": 0,
                                          "train.batch_size": 4, "train.phases.0.epochs": 1,
                                          "train.feature_cache_dir": str(tmp_path / "fc")})
    learn.fit(progress=False, log=lambda s: None)
    rng = np.random.default_rng(3)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (131, 97, 3), dtype=np.uint8)).save(photo, quality=95)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(learn.folder), str(photo), "--top-k", "3", "--out", str(out)]) == 0
    row = next(csv.DictReader(open(out)))
    cli = [(row[f"pred_{i}"], float(row[f"prob_{i}"])) for i in (1, 2, 3)]
    for given in (photo, str(photo), Image.open(photo), np.asarray(Image.open(photo).convert("RGB")),
                  torch.from_numpy(np.array(Image.open(photo).convert("RGB"))).permute(2, 0, 1)):
        python = learn.predict([given], top_k=3)[0]
        assert [name for name, _ in python] == [name for name, _ in cli], type(given)
        assert [p for _, p in python] == pytest.approx([p for _, p in cli], abs=2e-6)


def test_a_comparison_of_one_seed_runs_of_seed_7_shows_their_learning_curves(npz_data, tmp_path):
    from cnnlab.studies import run_compare
    from cnnlab.studies.report import write_report

    folder = run_compare(["basenet", "basenet_pp"], overrides={"data.path": str(npz_data), "train.epochs": 1,
                                                              "seeds": [7], "device": "cpu"},
                         classic=[], out=str(tmp_path / "runs"), progress=False, log=lambda s: None)
    page = write_report([folder]).read_text()
    for name in ("basenet", "basenet_pp"):  # before 0.12 the page looked for seed-1 and showed no curves
        assert f"{name}: learning curves (seed-7)" in page


def _readme_python_blocks() -> list[str]:
    """The Python blocks of the Python API tutorial (docs/tutorials/python-api.md; the README's until 0.13)."""
    section = (Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "python-api.md").read_text(encoding="utf-8")
    blocks, rest = [], section
    while "```python\n" in rest:
        rest = rest[rest.index("```python\n") + len("```python\n"):]
        blocks.append(rest[:rest.index("```")])
        rest = rest[rest.index("```") + 3:]
    return blocks


def test_the_readme_python_examples_run(birds_lab, npz_data, tmp_path, monkeypatch):
    """The Python API tutorial's examples, run as written: paths point at generated data, the names it leaves to
    the reader (an image, MyNet) are defined, and each fit is shortened (one epoch, small images, one seed)."""
    from cnnlab import api

    blocks = _readme_python_blocks()
    assert len(blocks) == 3
    original = api.Learner.__init__

    def short(self, model=None, data=None, **options):
        overrides = dict(options.pop("overrides", None) or {})
        overrides.update({"data.image_size": 32, "data.workers": 0, "train.batch_size": 8,
                          "train.feature_cache_dir": str(tmp_path / "fc")})
        if options.get("experiment") == "birdnet_v4":
            overrides.update({"train.phases.0.epochs": 1, "train.phases.1.epochs": 1})
        else:
            options["epochs"] = 1
        options.update(seeds=[1], device="cpu", out=tmp_path / "runs")
        original(self, model, data, overrides=overrides, **options)

    monkeypatch.setattr(api.Learner, "__init__", short)
    photos = tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((40, 40, 3), 60 + 150 * (name == "dog"), np.uint8)).save(photos / name / f"{i}.png")
    Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save("a.jpg")
    namespace = {"pil_image": Image.new("RGB", (90, 60)), "hwc_uint8_array": np.zeros((20, 30, 3), np.uint8),
                 "nchw_uint8_tensor": torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "MyNet": lambda: SmallNet(2),
                 "print": lambda *a, **k: None}
    paths = {'"~/birds"': repr(str(birds_lab)), '"~/photos"': repr(str(photos)), '"~/cifar"': repr(str(npz_data))}
    first = blocks[0]
    for placeholder, path in paths.items():
        blocks = [b.replace(placeholder, path) for b in blocks]
    exec(blocks[0].split("learn = cnnlab.Learner.from_folder")[0], namespace)  # noqa: S102 — the README's own code
    folder = namespace["learn"].folder
    exec(blocks[0][blocks[0].index("learn = cnnlab.Learner.from_folder"):].replace(
        '"runs/birdnet_v4/<stamp>"', repr(str(folder))), namespace)  # noqa: S102
    assert namespace["learn"].result.test_acc == namespace["result"].test_acc
    exec(blocks[1], namespace)  # noqa: S102
    exec(blocks[2].replace("fit()", "fit(progress=False, log=lambda s: None)"), namespace)  # noqa: S102
    assert "from_experiment(\"birdnet_v4\"" in first


def test_the_engine_table_and_the_configuration_name_the_same_engines():
    from cnnlab.config import ENGINES
    from cnnlab.engines import ENGINES_TABLE, PREFERENCE

    assert ENGINES == ("auto", *ENGINES_TABLE)
    assert set(PREFERENCE) <= set(ENGINES_TABLE) and ENGINES_TABLE["torch"].runs_graph is None
    from cnnlab.engines import run_graph

    with pytest.raises(ConfigError, match="engine 'torch' does not run exported graphs; use openvino or onnxruntime"):
        run_graph(b"", "torch")


def test_decoding_workers_start_from_a_forkserver_once_openvino_is_loaded(monkeypatch):
    from cnnlab.data import streaming

    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    assert streaming.worker_context() is None
    monkeypatch.setitem(sys.modules, "openvino", object())
    assert streaming.worker_context() == "forkserver"
    # and the server imports torch and the decoder once, before it forks: a worker then starts in a tenth
    # of a second, not the ~3 s of importing torch itself (benchmarks/worker_start.py)
    import multiprocessing.forkserver

    assert multiprocessing.forkserver._forkserver._preload_modules == ["torch", "cnnlab.data.streaming"]
