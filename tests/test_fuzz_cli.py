"""Fuzzing the command line and experiment files (hypothesis): whatever a user types, cnnlab exits 0 or 2,
prints no traceback, and an error leaves no folder behind — except the record of a run that started and
then failed (its status.json says so, and `cnnlab resume` or the message says what to do)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.cli.main import main
from conftest import write_easy_npz

# 25 examples each in the suite (~20 s); a deeper search: CNNLAB_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_cli.py
EXAMPLES = int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", "25"))

DATA = write_easy_npz(Path(tempfile.mkdtemp(prefix="cnnlab-fuzz-")) / "npz", train_per_class=6, test_per_class=2)

# Values of every kind a hand can type: numbers at and past the edges, non-numbers, YAML's surprises.
VALUES = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "0.5", "1e-9", "1e9", "nan", "inf", "-inf", "", "yes", "no", "on", "off",
                     "null", "[]", "[1, 2]", "{}", "{a: 1}", "'", '"', "..", "/", "~", "é", "\t", "0x10", "1_000",
                     "4294967296", "-4294967297", "adam", "sgd", "cosine", "auto", "none", "balanced", "flip",
                     "[1.5, 0.9]", "[-1, 0.5]", "[0.9, 1.0]", "[0, 0, 0]", "[8]", "[8, 8]", "[[1]]"]),
    st.lists(st.one_of(st.integers(-2, 9), st.floats(-1.5, 1.5, allow_nan=False)), max_size=4).map(str),
    st.integers(-5, 5).map(str), st.floats(-2, 2, allow_nan=False).map(lambda f: f"{f:.3g}"),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8))
# Keys whose values cannot make a tiny run long (epochs, sizes and the like are bounded in OPTIONS).
KEYS = st.sampled_from([
    "train.optimizer.lr", "train.optimizer.name", "train.optimizer.weight_decay", "train.optimizer.momentum",
    "train.optimizer.betas", "train.optimizer.eps", "train.optimizer.decay_norm_and_bias", "train.schedule",
    "train.warmup_epochs", "train.label_smoothing", "train.mixup", "train.cutmix", "train.mix_prob", "train.tta",
    "train.ema", "train.amp", "train.accumulate", "train.grad_clip", "train.class_weights",
    "train.class_weights_beta", "train.keep_best", "train.early_stopping.monitor", "train.early_stopping.patience",
    "data.val_fraction", "data.split_seed", "data.sampler", "data.num_classes", "data.source", "data.workers",
    "preprocess.normalize", "preprocess.augment.rotation", "preprocess.augment.hflip", "preprocess.augment.crop",
    "preprocess.augment.shift", "preprocess.augment.fill", "init", "seeds_together", "nonsense.key",
    "train.phases.0.epochs", "train.phases", "model_args.widths", "model_args.depth", "model_args.dropout",
    "model_args.image_size", "model_args.stem"])
OPTIONS = st.lists(st.one_of(
    st.tuples(st.just("--epochs"), st.sampled_from(["1", "2", "0", "-1", "x", "1.5"])),
    st.tuples(st.just("--batch-size"), st.sampled_from(["1", "7", "16", "0", "-2", "x"])),
    st.tuples(st.just("--seeds"), st.sampled_from(["1", "1 2", "2 2", "-1", "x", "4294967296"])),
    st.tuples(st.just("--folds"), st.sampled_from(["0", "1", "2", "3", "51", "-1"])),
    st.tuples(st.just("--device"), st.sampled_from(["cpu", "gpu", "cuda:9", ""])),
    st.tuples(st.just("--source"), st.sampled_from(["auto", "npz", "csv", "nope"])),
    st.tuples(st.just("--seeds-together"), st.sampled_from(["off", "maybe"])),
    st.tuples(st.just("--engine"), st.sampled_from(["torch", "warp"])),
    st.tuples(st.just("--set"), st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")),
), max_size=5)


def _outcome(argv: list[str], out: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's refusal of what it cannot parse
            code = exc.code
    return code, err.getvalue()


def _check(code: int, err: str, out: Path) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 2:
        for status in out.glob("*/*/status.json"):  # a run that began: its record says how it ended
            assert json.loads(status.read_text())["state"] in ("failed", "diverged"), status
        for folder in out.glob("*/*"):
            assert (folder / "status.json").is_file(), f"{folder}: left behind with no record of what happened"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(OPTIONS)
def test_any_command_line_ends_in_0_or_2_without_a_traceback(options):
    out = Path(tempfile.mkdtemp(prefix="cnnlab-fuzz-out-"))
    try:
        argv = ["run", "basenet", "--data", str(DATA), "--out", str(out), "--no-progress", "--device", "cpu",
                "--epochs", "1", "--set", "seeds_together=off"]
        for option, value in options:
            argv += [option, *value.split(" ")] if option == "--seeds" else [option, value]
        code, err = _outcome(argv, out)
        _check(code, err, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(KEYS, VALUES, max_size=4), st.sampled_from(["basenet", "basenet_pp", "cifar_recipe", "nope", "1"]))
def test_any_experiment_file_ends_in_0_or_2_without_a_traceback(values, model):
    out = Path(tempfile.mkdtemp(prefix="cnnlab-fuzz-out-"))
    try:
        document: dict = {"model": model, "train": {"epochs": 1}, "seeds_together": "off"}
        for key, text in values.items():  # a YAML value as a user would type it after the key
            node = document
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
            try:
                node[last] = yaml.safe_load(text) if text.strip() else text
            except yaml.YAMLError:
                node[last] = text
        config = out / "exp.yaml"
        config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
        code, err = _outcome(["run", "--config", str(config), "--data", str(DATA), "--out", str(out / "runs"),
                              "--no-progress", "--device", "cpu"], out / "runs")
        _check(code, err, out / "runs")
    finally:
        shutil.rmtree(out, ignore_errors=True)
