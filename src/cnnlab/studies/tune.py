"""`cnnlab tune EXPERIMENT --space SPACE.yaml`: honest hyperparameter search on Optuna.

The protocol, in the order it runs:

1. **Trials see validation only.** Each trial trains like `cnnlab run` on the training split (its
   seeds: `--seeds`, default the experiment's first) and reports the experiment's monitor on the
   validation split every epoch (`train.keep_best` if set, else `train.early_stopping.monitor`,
   else `val_acc`), so the pruner (ASHA, median, or none) stops poor trials early. The test split
   is handed to no trial: never evaluated, never written (`trials/trial-N/` holds metrics.csv
   with train/val columns and trial.json; no test figure anywhere).
2. **The study is Optuna's** (TPE, seeded), stored in `study.db` (SQLite) in the study folder, or
   in any RDB URL (`--storage postgresql://...`) that workers on several machines share with the
   same command. `--workers K` runs K trials at once here, the cores shared out. A trial whose
   process died (kill -9) stops sending its heartbeat: it is marked failed and tried again with
   the same parameters; the study ends with the requested number of finished trials.
3. **Only then is the test split used**: the best trial's configuration is written as `best.yaml`
   (`cnnlab run --config best.yaml` reproduces it), trained with the final seeds beside the untuned
   experiment on the same seeds, and both are tested: one table with the gain, Welch's p and the
   bootstrap interval (as the ablation reports a step), `final.json` and `final.md`.

    runs/tune/<study>/study.json, study.db, trials.csv, best.yaml, final.json, final.md, *.png
                      trials/trial-0007/seed-1/metrics.csv, trial.json
                      final/tuned/<stamp>/..., final/preset/<stamp>/...    (experiment folders)
"""
from __future__ import annotations

import hashlib
import json
import random
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cnnlab.layout as layout
import cnnlab.records as records
from cnnlab.config import ExperimentConfig, config_to_dict, load_experiment, save_yaml
from cnnlab.errors import CnnlabError, ConfigError, RunError, mask_secrets
from cnnlab.fileio import atomic_write_json, atomic_write_text, read_text_file
from cnnlab.studies.space import Dimension, load_space, trial_config
from cnnlab.training.callbacks import Callback, CancelFit

Log = Callable[[str], None]
PRUNERS = ("asha", "median", "none")
HEARTBEAT_S = int(os.environ.get("CNNLAB_TUNE_HEARTBEAT", "10"))  # a live trial says so this often
GRACE_S = 3 * HEARTBEAT_S  # silent this long: its process is gone, the trial is failed and retried


@dataclass
class TuneSettings:
    experiment: str
    space: str
    trials: int = 20
    timeout_min: float | None = None
    workers: int = 1
    storage: str | None = None
    pruner: str = "asha"
    seeds: list[int] = field(default_factory=list)  # each trial's seeds (default: the experiment's first)
    final_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    out: str | None = None
    study: str | None = None
    sampler_seed: int = 0
    skip_final: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("cnnlab tune needs the optional extra: pip install 'cnnlab[tune]' (optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def monitor_of(cfg: ExperimentConfig, task: str | None = None) -> tuple[str, str]:
    """(the validation figure a trial reports, maximize or minimize): the experiment's monitor, else val_acc (a
    multi-label experiment's — `task`, the data's, or cfg.task — val_map)."""
    default = "val_map" if (task or cfg.task) == "multilabel" else "val_acc"
    monitor = next((m for m in (cfg.train.keep_best, cfg.train.early_stopping.monitor) if m != "off"), default)
    return monitor, "minimize" if monitor == "val_loss" else "maximize"


def check_settings(settings: TuneSettings) -> tuple[ExperimentConfig, list[Dimension]]:
    if settings.trials < 1 or settings.workers < 1 or (settings.timeout_min is not None and settings.timeout_min <= 0):
        raise ConfigError("--trials and --workers: expected a value >= 1; --timeout: minutes > 0")
    if settings.pruner not in PRUNERS:
        raise ConfigError(f"--pruner {settings.pruner!r}: expected one of {', '.join(PRUNERS)}")
    for name, seeds in (("--seeds", settings.seeds), ("--final-seeds", settings.final_seeds)):
        if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ConfigError(f"{name}: distinct seeds >= 0, got {seeds}")
    if len(settings.final_seeds) < 2:
        raise ConfigError("--final-seeds: at least 2, so the comparison has a spread (3 by default)")
    base = load_experiment(settings.experiment, overrides=settings.overrides)
    dimensions = load_space(settings.space, settings.experiment, settings.overrides)
    if base.data.val_fraction == 0 and not base.data.folds:
        raise ConfigError("cnnlab tune chooses on the validation split: data.val_fraction must be > 0")
    return base, dimensions


def study_folder(settings: TuneSettings, base: ExperimentConfig) -> tuple[Path, dict]:
    """The study's folder (the same command finds it again) and its identity, checked against what it holds."""
    space_text = read_text_file(Path(settings.space).expanduser(), what="search space", error=ConfigError)
    # a study named after its space file: any file name works (`my space.yaml` → my-space)
    name = settings.study or f"{base.experiment_name}-{_study_name(Path(settings.space).stem)}"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"--study {name!r}: letters, digits, '-', '_' and '.' only")
    folder = Path(settings.out or base.out) / "tune" / name
    identity = {"experiment": settings.experiment, "space_sha256": hashlib.sha256(space_text.encode()).hexdigest(),
                "overrides": settings.overrides, "seeds": settings.seeds or base.seeds[:1],
                "monitor": monitor_of(base)[0]}
    record = folder / layout.STUDY_FILE
    if record.is_file():
        held = read_study_record(record)["identity"]
        if held != identity:
            changed = sorted(k for k in identity if held.get(k) != identity[k])
            raise RunError(f"{folder}: holds a study of another {', '.join(changed)}; continue it with the same "
                           "command, or start another with --study NAME")
    return folder, identity


STUDY_SCHEMA = {"identity": records.mapping(), "space": records.text(max_len=10_000_000)}
IDENTITY_SCHEMA = {"experiment": records.text(), "space_sha256": records.text(), "overrides": records.mapping(),
                   "seeds": records.list_of(records.integer(at_least=0), min_len=1), "monitor": records.text()}


def read_study_record(path: Path) -> dict:
    """A study folder's study.json, its identity checked field by field before it is compared or used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not a readable study record ({exc}); move the folder away to start the study anew")
    record = records.check(data, STUDY_SCHEMA, path, error=RunError, what="a study record")
    record["identity"] = records.check(record["identity"], IDENTITY_SCHEMA, f"{path}: field 'identity'",
                                       error=RunError, what="a study's identity")
    return record


def _study_name(text: str) -> str:
    """`text` with every character a study name does not take (spaces, slashes, ...) made a '-'."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "space"


def create_study_record(folder: Path, identity: dict, space_text: str) -> bool:
    """study.json in a new study folder; False when the folder held the study already."""
    record = folder / layout.STUDY_FILE
    if record.is_file():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, {"identity": identity, "space": space_text, "created": time.strftime("%Y-%m-%d %H:%M")})
    return True


def open_study(settings: TuneSettings, folder: Path, direction: str, worker: int = 0):
    import warnings

    optuna = _optuna()
    from optuna import storages

    url = settings.storage or f"sqlite:///{folder / 'study.db'}"
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeats are "experimental" in Optuna's words
                # Optuna 4.9 renamed the retry of stale trials; both say: a trial whose heartbeat stopped runs again
                if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
                    retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
                else:
                    retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=3)}
                storage = storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **retry,
                                              engine_kwargs={"connect_args": {"timeout": 60}}
                                              if url.startswith("sqlite") else None)
            break
        except ImportError as exc:  # the URL's driver is not installed: nothing to wait for
            raise ConfigError(mask_secrets(f"--storage {url}: cannot open it ({exc})")) from None
        except Exception as exc:  # a bad URL, an unreachable server; or workers started at once creating the
            # same tables in a fresh database (the loser sees a unique violation): a moment later they exist
            if attempt == 5:
                raise ConfigError(mask_secrets(f"--storage {url}: cannot open it ({str(exc).splitlines()[0][:200]})")
                                  ) from None
            time.sleep(0.5 + random.random() * 2)
    pruner = {"asha": optuna.pruners.SuccessiveHalvingPruner(), "median": optuna.pruners.MedianPruner(n_warmup_steps=1),
              "none": optuna.pruners.NopPruner()}[settings.pruner]
    for attempt in range(6):  # two workers creating one study at once: the second one loads it
        try:
            return optuna.create_study(study_name=folder.name, storage=storage, direction=direction,
                                       load_if_exists=True, pruner=pruner,
                                       sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed + worker))
        except Exception as exc:
            if attempt == 5:
                raise ConfigError(mask_secrets(f"--storage {url}: cannot create or load study '{folder.name}' "
                                               f"({str(exc).splitlines()[0][:200]})")) from None
            time.sleep(0.5 + random.random() * 2)


def finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class Objective:
    """One trial: the sampled configuration trained on the training split, judged on validation."""

    def __init__(self, settings: TuneSettings, dimensions: list[Dimension], folder: Path, log: Log):
        self.settings, self.dimensions, self.folder, self.log = settings, dimensions, folder, log
        self.splits: dict[str, Any] = {}

    def __call__(self, trial) -> float:
        from cnnlab.studies.experiment import data_key, load_data
        from cnnlab.studies.preflight import check_experiment
        from cnnlab.training.callbacks import RunFolderWriter
        from cnnlab.training.learner import Learner, silent
        from cnnlab.training.phases import resolve_phases
        from cnnlab.training.run_folder import RunFolder

        optuna = _optuna()
        params = {d.key: d.suggest(trial) for d in self.dimensions}
        cfg = trial_config(self.settings.experiment, self.settings.overrides, params)
        cfg.seeds = self.settings.seeds or cfg.seeds[:1]
        check_experiment(cfg)
        key = data_key(cfg)
        if key not in self.splits:
            self.splits = {key: load_data(cfg, log=lambda s: None)}  # one data set in memory at a time
        splits = _without_test(self.splits[key])
        monitor, direction = monitor_of(cfg, splits.task)
        folder = self.folder / "trials" / f"trial-{trial.number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        save_yaml(config_to_dict(cfg), folder / "config.yaml")
        tick, values, epochs_run, step = time.perf_counter(), [], 0, 0
        epochs = sum(p.epochs for p in resolve_phases(cfg.train))
        self.log(f"trial {trial.number}: {', '.join(f'{k}={v}' for k, v in params.items())}")
        for index, seed in enumerate(cfg.seeds):
            run_folder = RunFolder(folder / layout.seed_folder(seed))
            run_folder.path.mkdir(exist_ok=True)
            # a trial's seed folder is a run folder (record, metrics.csv, status, curves) without checkpoints
            # (a killed trial is tried again from its start) and without any test figure
            pruning = OptunaReport(trial, monitor, offset=index * epochs)  # seed k's epochs are steps of their own
            with run_folder.held():
                learner = Learner(cfg, splits, seed=seed, log=silent, progress=False,
                                  callbacks=[RunFolderWriter(run_folder, checkpoints=False), pruning])
                learner.run()
            epochs_run += pruning.reported
            if pruning.pruned:
                run_folder.status("pruned", epoch=learner.epochs_done)
                self._write(folder, trial, params, "pruned", None, epochs_run, tick, pruning.offset + learner.epochs_done)
                raise optuna.TrialPruned()
            history = learner.history
            kept = [r for r in history if r["epoch"] == (learner.best or {}).get("epoch")] or history[-1:]
            values.append(float(kept[0][monitor]))
            step = pruning.offset + history[-1]["epoch"]
        value = sum(values) / len(values)
        self._write(folder, trial, params, "complete", value, epochs_run, tick, step)
        self.log(f"trial {trial.number}: {monitor} {value:.4f} ({epochs_run} epochs, "
                 f"{time.perf_counter() - tick:.1f} s)")
        return value

    @staticmethod
    def _write(folder: Path, trial, params: dict, state: str, value: float | None, epochs: int, tick: float,
               step: int) -> None:
        atomic_write_json(folder / "trial.json", {"number": trial.number, "state": state, "params": params,
                                                  "value": value, "epochs_run": epochs, "last_step": step,
                                                  "time_s": time.perf_counter() - tick})


class OptunaReport(Callback):
    """A trial's callback: report the monitored validation figure every epoch, and end the fit when
    Optuna's pruner says the trial is poor (the Objective then marks it pruned)."""

    order = 50

    def __init__(self, trial, monitor: str, offset: int):
        self.trial, self.monitor, self.offset = trial, monitor, offset
        self.pruned, self.reported = False, 0

    def on_epoch_end(self, learner, row: dict) -> None:
        self.reported += 1
        self.trial.report(float(row[self.monitor]), self.offset + row["epoch"])
        if self.trial.should_prune():
            self.pruned = True
            raise CancelFit


def _without_test(splits):
    """The splits a trial may see: the test split is not handed over at all."""
    from dataclasses import replace

    return replace(splits, test=None)


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def optimize(settings: TuneSettings, dimensions: list[Dimension], folder: Path, direction: str, *, worker: int = 0,
             log: Log = print) -> None:
    """Run trials in this process until the study has `settings.trials` finished ones (or the timeout)."""
    import torch
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if settings.workers > 1:
        torch.set_num_threads(_threads_per_worker(settings.workers))
    study = open_study(settings, folder, direction, worker)
    if finished(study) >= settings.trials:
        return
    objective = Objective(settings, dimensions, folder, log)
    study.optimize(objective, n_trials=None if settings.timeout_min else settings.trials * 4,
                   timeout=settings.timeout_min * 60 if settings.timeout_min else None, catch=(CnnlabError,),
                   callbacks=[MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))],
                   gc_after_trial=True)


def _worker(settings: dict, dimensions: list[dict], folder: str, direction: str, index: int) -> None:
    optimize(TuneSettings(**settings), [Dimension(**d) for d in dimensions], Path(folder), direction, worker=index,
             log=lambda s: print(f"[worker {index}] {s}", flush=True))


def write_trials(study, folder: Path, dimensions: list[Dimension]) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        info = folder / "trials" / f"trial-{t.number:04d}" / "trial.json"
        extra = json.loads(info.read_text()) if info.is_file() else {}
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     **{d.key: t.params.get(d.key) for d in dimensions},
                     "epochs_run": extra.get("epochs_run"), "last_step": t.last_step,
                     "time_s": (t.datetime_complete - t.datetime_start).total_seconds()
                     if t.datetime_complete and t.datetime_start else None})
    from cnnlab.reporting.interpretation import write_rows_csv

    write_rows_csv(folder / "trials.csv", rows, list(rows[0]) if rows else ["number"])
    return rows


def study_figures(study, folder: Path, log: Log) -> list[str]:
    """Optuna's own matplotlib figures: history, intermediate values (pruned trials too), importances, slices."""
    from cnnlab.reporting.curves import plt  # Agg, names drawn as written (no TeX parsing)
    from optuna.visualization import matplotlib as views

    written = []
    for name, draw in (("optimization_history", views.plot_optimization_history),
                       ("intermediate_values", views.plot_intermediate_values),
                       ("param_importances", views.plot_param_importances), ("slice", views.plot_slice)):
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib views experimental
                axes = draw(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(9, 5)
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(figure)
            written.append(f"{name}.png")
        except Exception as exc:  # too few trials for importances, one parameter for a slice: say so, go on
            log(f"figure {name}: not drawn ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})")
    return written


def final_comparison(settings: TuneSettings, study, folder: Path, *, progress: bool, log: Log) -> dict:
    """best.yaml, then the tuned and the untuned experiment over the final seeds, tested only now."""
    from cnnlab.studies.ablation.stats import compare
    from cnnlab.studies.experiment import run_experiment
    from cnnlab.reporting.tables import is_multilabel, pm, render_table

    best = study.best_trial
    tuned = trial_config(settings.experiment, settings.overrides, best.params)
    tuned.seeds = list(settings.final_seeds)
    save_yaml({**config_to_dict(tuned), "seeds": list(settings.final_seeds)}, folder / "best.yaml")
    preset = load_experiment(settings.experiment, overrides=settings.overrides)
    preset.seeds = list(settings.final_seeds)
    results = {}
    for name, cfg in (("tuned", load_experiment(folder / "best.yaml")), ("preset", preset)):
        cfg.out = str(folder / "final" / name)
        log(f"\n=== final: {name} over seeds {settings.final_seeds} (the test split, used for the first time) ===")
        experiment = run_experiment(cfg, progress=progress, log=log)
        runs = json.loads((experiment / layout.SUMMARY_FILE).read_text())["runs"]
        # a multi-label experiment is compared on its test mAP (kept under test_acc's key: the study's one figure)
        headline = "test_map" if is_multilabel(runs) else "test_acc"
        results[name] = {"test_acc": [r[headline] for r in runs], "test_loss": [r["test_loss"] for r in runs],
                         "folder": str(experiment), "figure": headline}
        results[name]["test_acc_mean"] = sum(results[name]["test_acc"]) / len(runs)
    stats = compare(results["preset"]["test_acc"], results["tuned"]["test_acc"])
    final = {"tuned": results["tuned"], "preset": results["preset"], "best_trial": best.number,
             "best_params": best.params, "best_value": best.value,
             "monitor": monitor_of(preset, "multilabel" if results["tuned"]["figure"] == "test_map" else None)[0],
             "gain": stats["gain"], "p_value": stats["p_value"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
             "verdict": stats["verdict"], "seeds": settings.final_seeds}
    atomic_write_json(folder / layout.STUDY_RESULTS, final)
    header = ["", "runs", "test mAP" if results["tuned"]["figure"] == "test_map" else "test accuracy", "test loss"]
    body = [[name, str(len(results[name]["test_acc"])), pm(results[name]["test_acc"], percent=True),
             pm(results[name]["test_loss"], percent=False)] for name in ("preset", "tuned")]
    p = "—" if stats["p_value"] is None else f"{stats['p_value']:.3f}"
    verdict = (f"gain {100 * stats['gain']:+.2f} points, Welch p = {p}, 95 % bootstrap interval "
               f"[{100 * stats['ci_low']:+.2f}, {100 * stats['ci_high']:+.2f}]: {stats['verdict']}")
    params = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best.params.items())
    atomic_write_text(folder / "final.md", f"# Tuned against untuned: {settings.experiment}\n\n"
                                           f"best trial {best.number} on validation ({final['monitor']} {best.value:.4f}): "
                                           f"{params}\n\n{render_table(header, body, markdown=True)}\n\n{verdict}\n")
    log(f"\n{render_table(header, body)}\n\n{verdict}\nbest trial {best.number}: {params}")
    return final


def run_tune(settings: TuneSettings, *, progress: bool = True, log: Log = print) -> Path:
    """The whole study: trials (here, in workers, or joined to a shared storage), then the final test."""
    base, dimensions = check_settings(settings)
    from cnnlab.studies.preflight import check_experiment

    check_experiment(base)
    monitor, direction = monitor_of(base)
    folder, identity = study_folder(settings, base)
    existed = folder.exists()
    space_text = read_text_file(Path(settings.space).expanduser(), what="search space", error=ConfigError)
    created = create_study_record(folder, identity, space_text)
    try:
        study = open_study(settings, folder, direction)
    except CnnlabError:
        if created and not existed:  # nothing half-made: a study that could not open leaves no folder behind
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        raise
    log(f"study {folder} ({mask_secrets(settings.storage or 'SQLite: study.db')}): {settings.trials} trials over "
        f"{'; '.join(d.describe() for d in dimensions)}; each judged on {monitor} (validation), pruner "
        f"{settings.pruner}; {finished(study)} finished already")
    if settings.workers == 1:
        optimize(settings, dimensions, folder, direction, log=log)
    else:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker, args=(asdict(settings), [asdict(d) for d in dimensions],
                                                            str(folder), direction, index))
                     for index in range(settings.workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        if any(p.exitcode for p in processes):
            raise RunError(f"{folder}: a worker stopped (exit codes {[p.exitcode for p in processes]}); the same "
                           "command continues the study")
    rows = write_trials(study, folder, dimensions)
    done = finished(study)
    log(f"{done} finished trials ({sum(r['state'] == 'pruned' for r in rows)} pruned) in {folder / 'trials.csv'}")
    study_figures(study, folder, log)
    if settings.skip_final:
        return folder
    if done < settings.trials and not settings.timeout_min:
        raise RunError(f"{folder}: {done} of {settings.trials} trials finished; the same command continues the study")
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise RunError(f"{folder}: no trial completed (all pruned or failed); nothing to compare")
    if (folder / layout.STUDY_RESULTS).is_file():
        log(f"{folder / 'final.json'}: the final comparison is done already")
        return folder
    final_comparison(settings, study, folder, progress=progress, log=log)
    return folder
