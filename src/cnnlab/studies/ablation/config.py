"""Ablation files: a base experiment and a list of cumulative steps, strictly validated."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.studies.ablation.steps import get_improvement
from cnnlab.config import BUILTIN_ABLATIONS, _opt, _Reader, _yaml_lines, read_yaml
from cnnlab.errors import ConfigError



@dataclass
class StepConfig:
    name: str = _opt("baseline", help="a named improvement, or your own step's name")
    label: str | None = _opt(None, help="what the table calls it (default: the improvement's label)")
    set: dict = _opt({}, help="configuration keys this step changes (default: the named improvement's)")


@dataclass
class AblationConfig:
    name: str = _opt("ablation")
    base: str = _opt("basenet", help="experiment preset or YAML file the first step starts from")
    steps: list[StepConfig] = field(default_factory=list)
    seeds: list[int] = _opt([1, 2, 3])
    alpha: float = _opt(0.05, gt=0.0, max=0.5, help="significance level of the step-to-step test")


def parse_ablation(data: Any, *, source: str = "<ablation>", text: str | None = None) -> AblationConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with keys name, base, steps, seeds")
    data = copy.deepcopy(data)
    if isinstance(data.get("steps"), list):  # a bare string is a named improvement
        data["steps"] = [{"name": s} if isinstance(s, str) else s for s in data["steps"]]
    cfg = _Reader(source, _yaml_lines(text) if text else {}).build(AblationConfig, data)
    if not cfg.steps:
        raise ConfigError(f"{source}: key 'steps': expected at least one step")
    for step in cfg.steps:
        if not step.set:  # a named improvement: take its label and changes
            improvement = get_improvement(step.name)
            step.set = dict(improvement.changes)
            step.label = step.label or improvement.label
        step.label = step.label or step.name
    names = [s.name for s in cfg.steps]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: key 'steps': step names must be distinct, got {names}")
    return cfg


def load_ablation(name_or_path: str | Path) -> AblationConfig:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        builtin = BUILTIN_ABLATIONS / f"{name_or_path}.yaml"
        if not builtin.is_file():
            known = sorted(p.stem for p in BUILTIN_ABLATIONS.glob("*.yaml"))
            raise ConfigError(f"no ablation file or built-in ablation named '{name_or_path}'; "
                              f"built-in ablations: {', '.join(known)}")
        path = builtin
    if not path.is_file():
        raise ConfigError(f"{path}: ablation file not found")
    data, text = read_yaml(path)
    return parse_ablation(data, source=str(path), text=text)
