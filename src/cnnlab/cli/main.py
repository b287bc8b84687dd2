"""Entry point: dispatch sub-commands; user errors print one line, `--debug` shows the traceback."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import cnnlab.layout as layout
from cnnlab.cli.parser import build_parser
from cnnlab.config import (DEVICES, OPTION_KEYS, ExperimentConfig, list_builtin_experiments, load_experiment,
                           model_spec, option_overrides, parse_yaml, resolve_experiment_path)
from cnnlab.errors import CnnlabError, ConfigError, mask_secrets
from cnnlab.openmp import use_short_spin


def _overrides(args) -> tuple[dict, dict]:
    """Command-line options as dotted configuration keys, and the option that set each key.

    The values are validated with the file's rules; an error then names the option
    (`--epochs: key 'train.epochs': expected a value >= 1, got -1`), not the preset file.
    """
    overrides, origins = option_overrides({option: getattr(args, option, None) for option in OPTION_KEYS})
    if getattr(args, "no_feature_cache", False):
        overrides["train.feature_cache"], origins["train.feature_cache"] = False, "--no-feature-cache"
    sets, set_origins = parse_set_options(args.set)
    return {**overrides, **sets}, {**origins, **set_origins}


def parse_set_options(items: list[str]) -> tuple[dict, dict]:
    """`--set KEY=VALUE` items as dotted keys with YAML values, and the option that set each key."""
    overrides, origins = {}, {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.optimizer.lr=3e-4")
        try:
            overrides[key] = parse_yaml(raw, f"--set {key}")
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(exc).split(': ', 1)[-1]})") from None
        origins[key] = f"--set {key}"
    return overrides, origins


def experiment_from_args(args) -> ExperimentConfig:
    """--config FILE, else the built-in preset named MODEL, else defaults; then the options on top."""
    overrides, origins = _overrides(args)
    if args.config:
        source = args.config
        if args.model:
            overrides["model"], origins["model"] = args.model, "MODEL"
    elif args.model:
        source = args.model if args.model in list_builtin_experiments() else None
        if source is None:
            overrides["model"], origins["model"] = args.model, "MODEL"
    else:
        raise ConfigError("name a MODEL or give --config FILE (see `cnnlab list`)")
    return load_experiment(source, overrides=overrides, origins=origins)


def cmd_run(args) -> int:
    from cnnlab.studies import run_experiment
    from cnnlab.training import distributed

    cfg = experiment_from_args(args)
    distributed.setup(cfg.device)
    _report(run_experiment(cfg, progress=not args.no_progress))
    return 0


def _report(folder: Path) -> None:
    """report.html at the end of a study: on process 0 only, and never failing the study."""
    from cnnlab.studies.report import write_report_quietly
    from cnnlab.training import distributed

    if distributed.current().is_main:
        write_report_quietly(folder)


def cmd_ablation(args) -> int:
    from cnnlab.studies import load_ablation, run_ablation

    if not (args.config or args.ablation):
        raise ConfigError("name a built-in ablation (e.g. basenet_pp) or give --config FILE")
    ablation = load_ablation(args.config or args.ablation)
    overrides, origins = _overrides(args)
    if "seeds" in overrides:
        ablation.seeds = overrides.pop("seeds")
    out = overrides.pop("out", None)
    _report(run_ablation(ablation, base_overrides=overrides, origins=origins, out=out,
                         progress=not args.no_progress))
    return 0


def cmd_compare(args) -> int:
    from cnnlab.studies import run_compare

    overrides, origins = _overrides(args)
    out = overrides.pop("out", None)
    _report(run_compare(args.experiments, overrides=overrides, origins=origins, classic=args.classic, out=out,
                        progress=not args.no_progress))
    return 0


def cmd_summary(args) -> int:
    from cnnlab.data.loading import named_image_size
    from cnnlab.models import get_model_entry, model_preprocessing
    from cnnlab.models.summary import model_summary
    from cnnlab.training import build_model
    from cnnlab.training.phases import freeze_for_phase, resolve_phases

    if args.config:
        cfg = load_experiment(args.config, overrides={"model": args.model})
    elif args.model in list_builtin_experiments():
        cfg = load_experiment(args.model)
    else:
        cfg = load_experiment(None, overrides={"model": args.model})
    entry = get_model_entry(cfg.model)
    if entry.preprocessing is not None:  # counts need no weights and no network
        cfg.model_args = {**model_spec(cfg).shape_only(), **({"backbone": args.backbone} if args.backbone else {})}
    num_classes = args.num_classes or (200 if entry.preprocessing is not None else cfg.data.num_classes)
    # the images the experiment would train on: its data.image_size, else its weights' own size
    side = named_image_size(cfg.data, model_preprocessing(cfg.model, cfg.model_args)) or entry.input_size[1]
    input_size = (entry.input_size[0], side, side)
    model = build_model(cfg, num_classes, input_size)
    freeze_for_phase(model, resolve_phases(cfg.train)[0])  # show what the first phase trains
    print(model_summary(model, input_size).render(cfg.model))
    return 0


def cmd_probe(args) -> int:
    from cnnlab.studies.probe import run_probe

    if args.backbone:
        raise ConfigError("--backbone: cnnlab probe takes the list --backbones A B C")
    overrides, origins = _overrides(args)
    out = overrides.pop("out", None)
    _report(run_probe(args.backbones, overrides=overrides, origins=origins, classic=args.classic, out=out,
                      progress=not args.no_progress))
    return 0


def _list_backbones(pattern: str | None) -> None:
    """cnnlab's own backbones from the catalogue (no torch); with a PATTERN, the zoos' matching names."""
    from cnnlab.catalogue import BACKBONES, ZOOS

    print("backbones (--backbone; --weights default|none|NAME|PATH):")
    for name, facts in sorted(BACKBONES.items()):
        print(f"  {name:<18} {facts.description}; weights: {', '.join(facts.weights)} (default "
              f"{facts.default_weights}); stages: {', '.join(facts.stage_names)}")
    for zoo, what in ZOOS.items():
        print(f"  {zoo + '/NAME':<18} {what}")
    if pattern is None:
        print("  (`cnnlab list backbones PATTERN` lists the zoos' names containing PATTERN)")
        return
    sys.stdout.flush()  # the zoos import torch: what is known already is on the screen meanwhile
    import importlib

    for zoo in ZOOS:
        try:
            names = importlib.import_module(f"cnnlab.models.zoo_{zoo}").list_names(pattern)
        except CnnlabError as exc:  # timm not installed: say so, list the others
            print(f"{zoo}: {exc}")
            continue
        shown = names[:200]
        print(f"{zoo} models matching {pattern!r} ({len(names)}" + (", first 200" if len(names) > 200 else "") + "):")
        for name in shown:
            print(f"  {zoo}/{name}")


def cmd_list(args) -> int:
    # From catalogue.py, the source table and the preset files alone: no torch, so it answers at once.
    from cnnlab.catalogue import MODEL_DESCRIPTIONS
    from cnnlab.config import BUILTIN_ABLATIONS

    if args.what == "backbones":
        _list_backbones(args.pattern)
        return 0
    if args.what == "sources":
        _list_sources()
        return 0

    print("models:")
    for name, description in sorted(MODEL_DESCRIPTIONS.items()):
        print(f"  {name:<18} {description}")
    print("experiment presets (cnnlab run NAME, or --config NAME):")
    for name in list_builtin_experiments():
        cfg = load_experiment(name)
        phases = f" in {len(cfg.train.phases)} phases" if len(cfg.train.phases) > 1 else ""
        print(f"  {name:<18} model {cfg.model}, {cfg.train.total_epochs} epochs{phases}, seeds {cfg.seeds}  "
              f"[{resolve_experiment_path(name)}]")
    print("ablations (cnnlab ablation NAME):")
    for path in sorted(BUILTIN_ABLATIONS.glob("*.yaml")):
        print(f"  {path.stem:<18} [{path}]")
    _list_backbones(None)
    _list_sources()
    return 0


def _list_sources() -> None:
    """Every data source, in the order --source auto tries them (data/sources/)."""
    from cnnlab.data.sources import describe_sources, sources

    print("data sources (--source; auto tries them in this order):")
    table = sources()
    for name, what in describe_sources().items():
        named_only = name in table and table[name].detect is None
        print(f"  {name:<18} {what}" + (" [named, never detected]" if named_only else ""))


def cmd_resume(args) -> int:
    from cnnlab.studies import resume
    from cnnlab.training import distributed

    if args.device is not None and args.device not in DEVICES:
        raise ConfigError(f"--device: expected one of {', '.join(DEVICES)}; got {args.device!r}")
    distributed.setup(args.device or "auto")
    _report(resume(Path(args.run_dir), device=args.device, progress=not args.no_progress))
    return 0


def cmd_predict(args) -> int:
    from cnnlab.inference import load_trained, trained_runs
    from cnnlab.inference.predict import (accuracy, free_output_path, predict, top_k, trust_answers,
                                          write_predictions)
    from cnnlab.reporting.tables import render_table

    if args.device not in DEVICES:
        raise ConfigError(f"--device: expected one of {', '.join(DEVICES)}; got {args.device!r}")
    if args.ensemble and (args.coverage is not None or args.reject_rate is not None):
        raise ConfigError("--coverage and --reject-rate use one run's calibration scores; an ensemble's averaged "
                          "probabilities have none: choose one run with --seed S")
    out = free_output_path(Path(args.out) if args.out else None)
    paths = trained_runs(Path(args.run_dir)) if args.ensemble else [None]
    trust_asked = args.coverage is not None or args.reject_rate is not None  # one run's scores: no ensemble
    models = [load_trained(p or args.run_dir, seed=args.seed, device=args.device, engine=args.engine,
                           choose="--seed S" if trust_asked else "--seed S, or average them with --ensemble")
              for p in paths]
    names = models[0].class_names
    if models[0].multilabel and len(models) > 1:
        raise ConfigError("--ensemble: each run of a multi-label experiment chose its own thresholds on validation "
                          "for its own probabilities; an average has none: choose one run with --seed S")
    predictions, errors = predict(models, [Path(p) for p in args.images], batch_size=args.batch_size,
                                  workers=args.workers, strict=args.strict, progress=not args.no_progress)
    answers = trust_answers(models[0], predictions, coverage=args.coverage, reject_rate=args.reject_rate)
    write_predictions(out, predictions, names, args.top_k, answers, all_classes=args.all_classes)
    shown = predictions[:20]
    header = ["image", *[f"top {i}" for i in range(1, min(args.top_k, len(names), 3) + 1)],
              *(["labels (at the thresholds)"] if answers.labels is not None else []),
              *([f"set ({100 * args.coverage:g} %)"] if answers.sets is not None else []),
              *(["decision"] if answers.decisions is not None else [])]
    rows = [[str(p.path), *[f"{name} ({100 * prob:.1f} %)" for name, prob in top_k(p, names, 3)][:min(args.top_k, len(names), 3)],
             *([", ".join(answers.labels[i]) or "(none)"] if answers.labels is not None else []),
             *([", ".join(answers.sets[i])] if answers.sets is not None else []),
             *([answers.decisions[i]] if answers.decisions is not None else [])]
            for i, p in enumerate(shown)]
    print(render_table(header, rows))
    if len(predictions) > len(shown):
        print(f"... and {len(predictions) - len(shown)} more")
    source = (f"an ensemble of {len(models)} runs" if len(models) > 1 else str(models[0].source)) + \
        f" on {models[0].engine}"
    print(f"{len(predictions)} image(s) predicted with {source}; top-{min(args.top_k, len(names))} in {out}")
    if errors:
        print(f"skipped {len(errors)} unreadable file(s): " + "; ".join(errors[:5]) + (" ..." if len(errors) > 5 else ""),
              file=sys.stderr)
    score = None if models[0].multilabel else accuracy(predictions, names)  # class folders: one class an image
    if score:
        print(f"accuracy: {100 * score[0]:.2f} % of {score[1]} images in class folders")
    if answers.sets is not None:
        trust = models[0].trust
        print(f"sets: {sum(map(len, answers.sets)) / max(1, len(answers.sets)):.2f} classes on average, each holding "
              f"the true class with probability >= {args.coverage:g} ({trust.conformal_score} scores of "
              f"{trust.conformal_on})")
    if answers.decisions is not None:
        unknown = answers.decisions.count("unknown")
        print(f"unknown: {unknown} of {len(answers.decisions)} image(s), below the score that accepts "
              f"{100 * (1 - args.reject_rate):g} % of the validation images ({models[0].trust.reject_score})")
    return 0


def cmd_audit(args) -> int:
    from cnnlab.studies.audit import run_audit

    overrides, origins = _overrides(args)
    out = overrides.pop("out", None)
    run_audit(args.data, backbone=overrides.pop("model_args.backbone", None), folds=args.folds, overrides=overrides,
              out=out, write_split_to=args.write_split, relabel=args.relabel, similar=args.similar,
              progress=not args.no_progress,
              origins=origins)
    return 0


def cmd_ood(args) -> int:
    from cnnlab.inference import load_trained
    from cnnlab.errors import RunError
    from cnnlab.fileio import atomic_write_json
    from cnnlab.inference.ood import measure_ood, ood_table

    if args.device not in DEVICES:
        raise ConfigError(f"--device: expected one of {', '.join(DEVICES)}; got {args.device!r}")
    if args.out and Path(args.out).exists():
        raise RunError(f"{args.out}: already exists; cnnlab does not overwrite files: choose another --out")
    trained = load_trained(args.run_dir, seed=args.seed, device=args.device, engine=args.engine, choose="--seed S")
    figures = measure_ood(trained, [Path(p) for p in args.images], reject_rate=args.reject_rate,
                          batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress)
    print(ood_table(figures))
    if args.out:
        atomic_write_json(Path(args.out), figures)
        print(f"figures in {args.out}")
    return 0


def cmd_export(args) -> int:
    from cnnlab.inference import load_trained
    from cnnlab.inference.export import export_model

    trained = load_trained(args.run_dir, seed=args.seed, device="cpu", choose="--seed S")
    suffix = ".xml" if args.format == "openvino" else ".onnx"
    default = f"model{'-int8' if args.int8 else ''}{'-uint8' if args.uint8_input else ''}{suffix}"
    out = Path(args.out) if args.out else trained.source.parent / default
    if out.suffix != suffix:
        raise ConfigError(f"--out {out}: an {args.format} model is written as a {suffix} file")
    export_model(trained, out, fmt=args.format, uint8_input=args.uint8_input, opset=args.opset, int8=args.int8,
                 calibration=args.calibration, int8_tolerance=args.int8_tolerance, force=args.force)
    return 0


def _study_overrides(args) -> tuple[dict, dict]:
    """The experiment options of a study command (tune, lr-find): `run`'s mapping, without the study's own
    --seeds and --out (a tune's trial seeds, the study's folder)."""
    overrides, origins = _overrides(args)
    for key in ("seeds", "out"):
        overrides.pop(key, None)
        origins.pop(key, None)
    return overrides, origins


def cmd_tune(args) -> int:
    from cnnlab.studies.tune import TuneSettings, run_tune

    overrides, _ = _study_overrides(args)
    settings = TuneSettings(experiment=args.experiment, space=args.space, trials=args.trials,
                            timeout_min=args.timeout, workers=args.workers, storage=args.storage, pruner=args.pruner,
                            seeds=args.seeds, final_seeds=args.final_seeds, out=args.out, study=args.study,
                            skip_final=args.skip_final, overrides=overrides)
    folder = run_tune(settings, progress=not args.no_progress)
    if (folder / layout.STUDY_RESULTS).is_file():
        _report(folder)
    return 0


def cmd_lr_find(args) -> int:
    from cnnlab.studies.lr_find import lr_find

    overrides, origins = _study_overrides(args)
    lr_find(args.experiment, overrides=overrides, origins=origins, phase=args.phase, start=args.start, end=args.end,
            steps=args.steps, out=args.out)
    return 0


def cmd_serve(args) -> int:
    from cnnlab.inference.serve import serve

    serve(args.run_dir, host=args.host, port=args.port, engine=args.engine, workers=args.workers,
          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, seed=args.seed)
    return 0


def cmd_interpret(args) -> int:
    from cnnlab.inference.interpret import interpret

    folder = Path(args.run_dir)
    interpret(folder, gradcam_images=args.gradcam, layer=args.layer)
    for candidate in (folder, folder.parent):  # the report shows the new figures too
        if (candidate / "report.html").is_file():
            _report(candidate)
    return 0


def cmd_report(args) -> int:
    from cnnlab.studies.report import write_report

    out = write_report(args.paths, out=args.out, fmt=args.format)
    print(f"report: {out}")
    return 0


COMMANDS = {"run": cmd_run, "ablation": cmd_ablation, "compare": cmd_compare, "summary": cmd_summary,
            "list": cmd_list, "resume": cmd_resume, "predict": cmd_predict, "export": cmd_export,
            "interpret": cmd_interpret, "ood": cmd_ood, "audit": cmd_audit, "report": cmd_report, "probe": cmd_probe,
            "serve": cmd_serve, "tune": cmd_tune, "lr-find": cmd_lr_find}


def _sigterm_as_interrupt(signum, frame):  # a killed batch job stops like Ctrl-C: cleanly
    raise KeyboardInterrupt


def _command_parser(parser, command: str):
    import argparse

    for action in parser._actions:  # argparse keeps its sub-parsers in this action only
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _settings_of_cnnlabs_own_process() -> None:
    """What the command line sets for itself, never `import cnnlab` (a notebook's process is the user's)."""
    use_short_spin()  # OpenMP waits briefly (cnnlab/openmp.py): set before torch loads
    # oneTBB (OpenVINO's thread pool) does not survive vfork(): a process that had run OpenVINO crashed
    # now and then (SIGSEGV, a race) when it later started a subprocess. Python has no public switch for
    # subprocess's vfork; its documented escape hatch is this private flag (CPython 3.10+). Set here only,
    # in cnnlab's own process; decoding workers avoid fork after OpenVINO by themselves (data/streaming.py).
    import subprocess

    if hasattr(subprocess, "_USE_VFORK"):
        subprocess._USE_VFORK = False


def main(argv: list[str] | None = None) -> int:
    _settings_of_cnnlabs_own_process()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, with its usage (`predict --topk`), not the top-level one
        _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command not in ("run", "resume"):
            raise ConfigError(f"under torchrun only `cnnlab run` and `cnnlab resume` are distributed; "
                              f"run `cnnlab {args.command}` as a single process")
        return COMMANDS[args.command](args)
    except CnnlabError as exc:
        if args.debug:
            raise
        print(f"cnnlab: error: {mask_secrets(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnlab list | head`: the reader left; not an error worth a traceback
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
