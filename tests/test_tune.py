"""`cnnlab tune` (Optuna) and `cnnlab lr-find`: validation only, the test sealed, resumable, many workers."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.errors import ConfigError

optuna = pytest.importorskip("optuna")

SPACE = "train.optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}\ntrain.label_smoothing: {choices: [0.0, 0.1]}\n"


def _space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _settings(npz_data, tmp_path, **more):
    from cnnlab.studies.tune import TuneSettings

    settings = {"experiment": "basenet", "space": str(_space(tmp_path)), "trials": 6, "pruner": "median",
                "final_seeds": [1, 2], "out": str(tmp_path / "runs"),
                "overrides": {"data.path": str(npz_data), "train.epochs": 4, "device": "cpu"}}
    return TuneSettings(**{**settings, **more})


def test_a_tune_prunes_writes_best_yaml_that_reproduces_its_trial_and_tests_only_at_the_end(npz_data, tmp_path):
    from cnnlab.config import load_experiment
    from cnnlab.studies import run_experiment
    from cnnlab.studies.tune import run_tune

    folder = run_tune(_settings(npz_data, tmp_path, trials=8), progress=False, log=lambda s: None)
    trials = [json.loads(p.read_text()) for p in sorted((folder / "trials").glob("*/trial.json"))]
    assert len([t for t in trials if t["state"] in ("complete", "pruned")]) == 8
    for trial in trials:  # a pruned trial stopped at the epoch the pruner chose, and trained no further
        rows = (folder / "trials" / f"trial-{trial['number']:04d}" / "seed-1" / "metrics.csv").read_text().splitlines()
        assert len(rows) - 1 == trial["epochs_run"] == trial["last_step"]
        if trial["state"] == "pruned":
            assert trial["epochs_run"] < 4 and trial["value"] is None
    for path in (folder / "trials").rglob("*"):  # the test split never reached a trial
        if path.is_file():
            assert b"test_acc" not in path.read_bytes() and b"test_loss" not in path.read_bytes(), path
    for trial in trials:  # each trial's seed folder is a run folder (as `cnnlab run` writes), less the test
        run = folder / "trials" / f"trial-{trial['number']:04d}" / "seed-1"
        held = {p.name for p in run.iterdir()}
        assert {"config.yaml", "environment.json", "model.txt", "metrics.csv", "status.json", "curves.png"} <= held
        assert not held & {"results.json", "model.safetensors", "test_predictions.csv", "checkpoint.pt"}, held
        state = json.loads((run / "status.json").read_text())["state"]
        assert state == ("pruned" if trial["state"] == "pruned" else "finished")
    best = min(trials, key=lambda t: -t["value"] if t["state"] == "complete" else 1e9)
    final = json.loads((folder / "final.json").read_text())
    assert final["best_trial"] == best["number"] and final["best_params"] == best["params"]
    assert set(final) >= {"tuned", "preset", "p_value", "gain", "ci_low", "ci_high"}
    assert len(final["tuned"]["test_acc"]) == len(final["preset"]["test_acc"]) == 2
    assert all(0 <= a <= 1 for a in final["tuned"]["test_acc"] + final["preset"]["test_acc"])
    assert final["tuned"]["test_acc_mean"] == pytest.approx(sum(final["tuned"]["test_acc"]) / 2)
    assert "| preset " in (folder / "final.md").read_text() and "| tuned " in (folder / "final.md").read_text()
    # best.yaml, run on the trial's seed, gives the trial's validation figure
    cfg = load_experiment(folder / "best.yaml", overrides={"seeds": [1], "out": str(tmp_path / "again")})
    again = json.loads((run_experiment(cfg, progress=False, log=lambda s: None) / "seed-1" / "results.json").read_text())
    assert again["final_val_acc"] == pytest.approx(best["value"], abs=1e-12)
    header = (folder / "trials.csv").read_text().splitlines()[0]
    assert header.startswith("number,state,value,train.optimizer.lr,train.label_smoothing,epochs_run")
    assert (folder / "optimization_history.png").is_file() and (folder / "intermediate_values.png").is_file()
    from cnnlab.studies.report import write_report

    assert "Tuned against untuned" in write_report([folder]).read_text()


def test_space_files_name_their_line_and_key_and_refuse_unknown_distributions(tmp_path):
    from cnnlab.studies.space import load_space

    cases = {
        "train.optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}\ntrain.optimzer.lr: {low: 1, high: 2}\n":
            "space.yaml:2: key 'train.optimzer': unknown key",
        "train.optimizer.lr: {mean: 0.01, sd: 0.001}\n": "space.yaml:1: key 'train.optimizer.lr': unknown distribution",
        "train.optimizer.lr: {low: 0.1, high: 0.01}\n": "low 0.1 must be below high 0.01",
        "train.optimizer.lr: {low: 0.0, high: 0.1, log: true}\n": "a log range needs low > 0",
        "train.label_smoothing: {low: 0.0, high: 2.0}\n": "space.yaml:1: key 'train.label_smoothing': expected a value <= 0.9",
        "train.optimizer.name: {choices: [adam, lion]}\n": "space.yaml:1: key 'train.optimizer.name'",
        "train.epochs: 5\n": "expected {low, high[, log, step]} or {choices: [...]}",
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{")):
            load_space(_space(tmp_path, text), "basenet")
    dims = load_space(_space(tmp_path, "train.phases.0.epochs: {low: 5, high: 40, step: 5}\n"
                                       "train.phases.1.lr: {low: 1.0e-5, high: 1.0e-3, log: true}\n"), "birdnet_v4")
    assert [(d.key, d.kind) for d in dims] == [("train.phases.0.epochs", "int"), ("train.phases.1.lr", "float")]
    with pytest.raises(ConfigError, match="space.yaml:1: key 'train.epochs': this experiment trains in phases"):
        load_space(_space(tmp_path, "train.epochs: {low: 5, high: 40}\n"), "birdnet_v4")


def _tune_command(npz_data, tmp_path, *extra, out: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "cnnlab", "tune", "basenet", "--space", str(_space(tmp_path)), "--trials", "5",
            "--pruner", "none", "--final-seeds", "1", "2", "--out", str(out or tmp_path / "runs"), "--data",
            str(npz_data), "--set", "train.epochs=6", "--device", "cpu", "--no-progress", *extra]


def _states(folder: Path) -> list[tuple[int, str, dict]]:
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")
    return [(t.number, t.state.name, t.params) for t in study.get_trials()]


def test_a_tune_killed_mid_trial_continues_to_the_requested_trials_none_lost_or_twice(npz_data, tmp_path):
    env = {**os.environ, "CNNLAB_TUNE_HEARTBEAT": "1"}  # a dead trial is noticed after 3 s
    process = subprocess.Popen(_tune_command(npz_data, tmp_path, "--skip-final"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "runs" / "tune" / "basenet-space"
    deadline = time.time() + 240
    while time.time() < deadline and not (folder / "trials" / "trial-0002" / "seed-1" / "metrics.csv").is_file():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # in the middle of trial 2
    process.wait()
    before = _states(folder)
    assert [s for _, s, _ in before].count("RUNNING") == 1
    time.sleep(3.5)  # its heartbeat is now older than the grace period
    done = subprocess.run(_tune_command(npz_data, tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _states(folder)
    finished = [(n, p) for n, s, p in after if s == "COMPLETE"]
    failed = [(n, p) for n, s, p in after if s == "FAIL"]
    assert len(finished) == 5 and [s for _, s, _ in after].count("RUNNING") == 0
    assert [n for n, _ in failed] == [2]  # the killed trial, and only it
    assert failed[0][1] in [p for _, p in finished]  # tried again, with its parameters
    assert len({n for n, _ in finished}) == 5  # no trial number twice
    assert (folder / "final.json").is_file()


def test_two_workers_share_one_sqlite_study(npz_data, tmp_path):
    done = subprocess.run(_tune_command(npz_data, tmp_path, "--workers", "2", "--skip-final"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "runs" / "tune" / "basenet-space"
    states = _states(folder)
    assert len([s for _, s, _ in states if s == "COMPLETE"]) >= 5
    assert len({n for n, _, _ in states}) == len(states)
    workers = {line.split("]")[0] for line in done.stdout.splitlines() if line.startswith("[worker")}
    assert workers == {"[worker 0", "[worker 1"}  # both took trials


def _postgres(tmp_path: Path):
    binaries = [*sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True), Path("/usr/local/bin"), Path("/usr/bin")]
    initdb = next((b / "initdb" for b in binaries if (b / "initdb").exists()), None)
    if initdb is None or shutil.which("runuser") is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must install postgresql (.ci/run does)")
        pytest.skip("no PostgreSQL here (apt-get install -y postgresql)")
    pg_ctl = initdb.parent / "pg_ctl"
    # PostgreSQL will not run as root: a folder the unprivileged user can reach (pytest's are root's only)
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="cnnlab-pg-")) / "data"
    os.chmod(data.parent, 0o755)
    data.mkdir()
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(data, "nobody")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, str(pg_ctl), "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", [*as_user, str(pg_ctl), "-D", str(data), "-m", "fast",
                                                                "stop"], data.parent


def test_two_workers_on_two_processes_share_one_postgresql_study(npz_data, tmp_path):
    pytest.importorskip("psycopg")
    url, stop, scratch = _postgres(tmp_path)
    try:
        extra = ("--storage", url, "--skip-final", "--study", "shared")
        # two machines' worth of workers: the same command twice, each with its own study folder
        first, second = (subprocess.Popen(_tune_command(npz_data, tmp_path, *extra, out=tmp_path / side),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                         for side in ("a", "b"))
        outs = [p.communicate(timeout=600) for p in (first, second)]
        assert first.returncode == 0 and second.returncode == 0, [o[1][-2000:] for o in outs]
        study = optuna.load_study(study_name="shared", storage=url)
        trials = study.get_trials()
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers)) and sum(t.state.name == "COMPLETE" for t in trials) >= 5
        ran = {p.parent.name for p in (tmp_path / "a").rglob("trial.json")} | \
            {p.parent.name for p in (tmp_path / "b").rglob("trial.json")}
        mine_a = {p.parent.name for p in (tmp_path / "a").rglob("trial.json")}
        mine_b = {p.parent.name for p in (tmp_path / "b").rglob("trial.json")}
        assert not mine_a & mine_b and len(ran) == len(trials)  # every trial finished by exactly one worker
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def test_lr_find_suggests_inside_its_range_draws_the_plot_and_leaves_the_model_untouched(npz_data, tmp_path,
                                                                                      monkeypatch):
    from cnnlab.studies import lr_find as module
    from cnnlab.training import learner as learner_module

    built = []
    original = learner_module.Learner.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(learner_module.Learner, "__init__", remember)
    result = module.lr_find("basenet", overrides={"data.path": str(npz_data), "device": "cpu"}, steps=60,
                            out=str(tmp_path / "runs"), log=lambda s: None)
    assert 1e-7 <= result["suggestion"] <= 10 and result["suggestion"] < result["minimum_lr"]
    folder = Path(result["folder"])
    assert (folder / "lr_find.png").stat().st_size > 10_000 and (folder / "lr_find.csv").is_file()
    assert result["key"] == "train.optimizer.lr"
    monkeypatch.setattr(learner_module.Learner, "__init__", original)
    from cnnlab.config import load_experiment
    from cnnlab.studies.experiment import load_data

    cfg = load_experiment("basenet", overrides={"data.path": str(npz_data), "device": "cpu"})
    fresh = learner_module.Learner(cfg, load_data(cfg, log=lambda s: None), seed=cfg.seeds[0], log=lambda s: None,
                                   progress=False)
    for (name, a), b in zip(built[0].model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(a, b), name  # the weights after the test are the weights it started from
    with pytest.raises(ConfigError, match="--phase 3: birdnet_v4 has phases 0..1"):
        module.lr_find("birdnet_v4", overrides={"data.path": str(npz_data), "model_args.weights": "none",
                                                "device": "cpu"}, phase=3, log=lambda s: None)
