"""One step of an ablation as an experiment file, to train that step alone at full length.

    python benchmarks/ablation_step.py basenet_pp batchnorm --data ../shared/data/cifar100-subset25 \\
        -o ../longruns/basenet_pp-batchnorm.yaml
    nohup cnnlab run --config ../longruns/basenet_pp-batchnorm.yaml --seeds 1 --out ../longruns > bn.log 2>&1 &
    python benchmarks/long_runs.py ../longruns/basenet_pp-batchnorm/<stamp>

A step of `cnnlab ablation` is the previous steps' changes plus its own (studies/ablation/runner.py's
step_configs, which this calls); the file holds that whole configuration, named
`<ablation>-<step>` as in the ablation's own folders, so a step the ablation did not reach (a
lease ended, a session ended) can be trained on its own, resumed with `cnnlab resume` and
recorded with long_runs.py. An existing file is never overwritten.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab.cli.main import parse_set_options
from cnnlab.config import save_config
from cnnlab.errors import CnnlabError
from cnnlab.studies.ablation.config import load_ablation
from cnnlab.studies.ablation.runner import step_configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ablation", help="a built-in ablation (basenet_pp) or an ablation YAML file")
    ap.add_argument("step", help="the step's name, as the ablation lists it")
    ap.add_argument("--data", help="data.path of every step")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a configuration override")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the experiment file to write")
    args = ap.parse_args()
    try:
        overrides, origins = parse_set_options(args.set)
        ablation = load_ablation(args.ablation)
    except CnnlabError as exc:
        ap.error(str(exc))
    if args.data:  # a --set data.path=... still wins, as it did
        overrides, origins = {"data.path": args.data, **overrides}, {"data.path": "--data", **origins}
    names = [step.name for step in ablation.steps]
    if args.step not in names:
        ap.error(f"ablation {ablation.name} has no step {args.step!r}; its steps: {', '.join(names)}")
    if args.output.exists():
        ap.error(f"{args.output} exists; not overwriting it")
    try:
        cfg = step_configs(ablation, overrides, origins)[names.index(args.step)]
    except CnnlabError as exc:  # an override the configuration refuses, named
        ap.error(str(exc))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_config(cfg, args.output)
    print(f"written {args.output}: {cfg.experiment_name} (model {cfg.model}, {cfg.train.total_epochs} epochs)")


if __name__ == "__main__":
    main()
