"""Entry point: dispatch sub-commands; user errors print one line, `--debug` shows the traceback."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import yaml

from cnnlab.cli.parser import build_parser
from cnnlab.config import ExperimentConfig, list_builtin_experiments, load_experiment, resolve_experiment_path
from cnnlab.errors import CnnlabError, ConfigError


def _overrides(args) -> dict:
    """Command-line options as dotted configuration keys (validated with the file's rules)."""
    pairs = {"data.path": args.data, "data.source": args.source, "train.epochs": args.epochs,
             "train.batch_size": args.batch_size, "seeds": args.seeds, "device": args.device, "out": args.out,
             "data.folds": args.folds}
    overrides = {k: v for k, v in pairs.items() if v is not None}
    if args.backbone:
        overrides["model_args.backbone"] = args.backbone
    if args.weights:
        overrides["model_args.weights"] = args.weights
    if args.no_feature_cache:
        overrides["train.feature_cache"] = False
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.optimizer.lr=3e-4")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return overrides


def experiment_from_args(args) -> ExperimentConfig:
    """--config FILE, else the built-in preset named MODEL, else defaults; then the options on top."""
    overrides = _overrides(args)
    if args.config:
        source = args.config
        if args.model:
            overrides["model"] = args.model
    elif args.model:
        source = args.model if args.model in list_builtin_experiments() else None
        if source is None:
            overrides["model"] = args.model
    else:
        raise ConfigError("name a MODEL or give --config FILE (see `cnnlab list`)")
    return load_experiment(source, overrides=overrides)


def cmd_run(args) -> int:
    from cnnlab.models import get_model_entry
    from cnnlab.training import run_experiment

    cfg = experiment_from_args(args)
    get_model_entry(cfg.model)
    run_experiment(cfg, progress=not args.no_progress)
    return 0


def cmd_ablation(args) -> int:
    from cnnlab.ablation import load_ablation, run_ablation

    if not (args.config or args.ablation):
        raise ConfigError("name a built-in ablation (e.g. basenet_pp) or give --config FILE")
    ablation = load_ablation(args.config or args.ablation)
    overrides = _overrides(args)
    if "seeds" in overrides:
        ablation.seeds = overrides.pop("seeds")
    out = overrides.pop("out", None)
    run_ablation(ablation, base_overrides=overrides, out=out, progress=not args.no_progress)
    return 0


def cmd_compare(args) -> int:
    from cnnlab.training.compare import run_compare

    overrides = _overrides(args)
    out = overrides.pop("out", None)
    run_compare(args.experiments, overrides=overrides, classic=args.classic, out=out, progress=not args.no_progress)
    return 0


def cmd_summary(args) -> int:
    from cnnlab.models import get_model_entry
    from cnnlab.models.summary import model_summary
    from cnnlab.training.phases import freeze_for_phase, resolve_phases
    from cnnlab.training.run import build_model

    if args.config:
        cfg = load_experiment(args.config, overrides={"model": args.model})
    elif args.model in list_builtin_experiments():
        cfg = load_experiment(args.model)
    else:
        cfg = load_experiment(None, overrides={"model": args.model})
    entry = get_model_entry(cfg.model)
    if entry.preprocessing is not None:  # counts need no weights and no network
        cfg.model_args = {**cfg.model_args, "weights": "none", **({"backbone": args.backbone} if args.backbone else {})}
    num_classes = args.num_classes or (200 if entry.preprocessing is not None else cfg.data.num_classes)
    model = build_model(cfg, num_classes, entry.input_size)
    freeze_for_phase(model, resolve_phases(cfg.train)[0])  # show what the first phase trains
    print(model_summary(model, entry.input_size).render(cfg.model))
    return 0


def cmd_list(args) -> int:
    from cnnlab.data.sources import describe_sources
    from cnnlab.training.phases import total_epochs
    from cnnlab.models import get_model_entry, list_models

    print("models:")
    for name in list_models():
        print(f"  {name:<18} {get_model_entry(name).description}")
    print("experiment presets (cnnlab run NAME, or --config NAME):")
    for name in list_builtin_experiments():
        cfg = load_experiment(name)
        phases = f" in {len(cfg.train.phases)} phases" if len(cfg.train.phases) > 1 else ""
        print(f"  {name:<18} model {cfg.model}, {total_epochs(cfg.train)} epochs{phases}, seeds {cfg.seeds}  "
              f"[{resolve_experiment_path(name)}]")
    from cnnlab.ablation.config import BUILTIN_ABLATIONS

    print("ablations (cnnlab ablation NAME):")
    for path in sorted(BUILTIN_ABLATIONS.glob("*.yaml")):
        print(f"  {path.stem:<18} [{path}]")
    from cnnlab.models import get_backbone, list_backbones

    print("backbones (--backbone; --weights default|none|NAME|PATH):")
    for name in list_backbones():
        entry = get_backbone(name)
        print(f"  {name:<18} weights: {', '.join(entry.weights)} (default {entry.default_weights}); "
              f"stages: {', '.join(entry.stages)}")
    print("data sources (--source):")
    for name, what in describe_sources().items():
        print(f"  {name:<18} {what}")
    return 0


def cmd_resume(args) -> int:
    from cnnlab.training import resume

    resume(Path(args.run_dir), device=args.device, progress=not args.no_progress)
    return 0


COMMANDS = {"run": cmd_run, "ablation": cmd_ablation, "compare": cmd_compare, "summary": cmd_summary, "list": cmd_list, "resume": cmd_resume}


def _sigterm_as_interrupt(signum, frame):  # a killed batch job stops like Ctrl-C: cleanly
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        print(f"cnnlab: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("cnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
