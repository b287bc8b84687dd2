"""A search space: configuration keys mapped to ranges in Optuna's own terms, checked like experiment files.

    train.optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}     # suggest_float (log scale)
    train.label_smoothing: {choices: [0.0, 0.1, 0.2]}               # suggest_categorical
    train.epochs: {low: 5, high: 40, step: 5}                       # suggest_int: the key holds an int

Every key must be one an experiment file accepts (`train.phases.1.lr` tunes that phase); the range
ends and each choice are applied to the experiment and validated, so `space.yaml:2: key
'train.optimzer.lr': unknown key` is said before any trial runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.config import ExperimentConfig, _yaml_lines, config_to_dict, load_experiment, read_yaml
from cnnlab.errors import ConfigError

RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key} in {list(self.choices)}"
        scale = ", log" if self.log else (f", step {self.step:g}" if self.step else "")
        return f"{self.key} in [{self.low:g}, {self.high:g}]{scale} ({self.kind})"


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {what}: expected a number, got {value!r}")
    return value


def _check_step(low: float, high: float, step: float, where: str) -> None:
    """A step must be positive, at most the range, and divide it: Optuna would otherwise stop short of `high`
    (a range 0..1 in steps of 0.3 never tries 1) without a word."""
    if step <= 0:
        raise ConfigError(f"{where}: step: expected a value > 0, got {step}")
    span = high - low
    if step > span:
        raise ConfigError(f"{where}: step {step} is wider than the range [{low}, {high}]")
    count = span / step
    if abs(count - round(count)) > 1e-9 * max(1.0, count):
        last = low + int(count) * step
        raise ConfigError(f"{where}: step {step} does not divide the range [{low}, {high}] (its last value would be "
                          f"{last:g}, not {high}); make high - low a multiple of the step")


def _held(config: dict, dotted: str) -> Any:
    """The value the experiment holds at `a.b.0.c` (lists indexed), or None."""
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def load_space(path: str | Path, experiment: str, overrides: dict[str, Any] | None = None) -> list[Dimension]:
    """The dimensions of the space file at `path`, each checked against `experiment`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: search space file not found")
    data, text = read_yaml(path)
    lines = _yaml_lines(text)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of configuration keys to ranges, e.g. "
                          "'train.optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}'")
    base = config_to_dict(load_experiment(experiment, overrides=overrides))
    dimensions = []
    for key, spec in data.items():
        where = f"{path}:{lines.get(str(key), '?')}"
        key = str(key)
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: key '{key}': expected {{low, high[, log, step]}} or {{choices: [...]}}, "
                              f"got {spec!r}")
        unknown = set(spec) - RANGE_KEYS - {"choices"}
        if unknown or ("choices" in spec and set(spec) != {"choices"}) or ("choices" not in spec and
                                                                           not {"low", "high"} <= set(spec)):
            raise ConfigError(f"{where}: key '{key}': unknown distribution {sorted(spec)}; expected "
                              "{low, high} with optional log (true/false) or step, or {choices: [...]}")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: key '{key}': choices: expected a non-empty list")
            dimension = Dimension(key, "categorical", choices=tuple(choices))
            candidates = choices
        else:
            low, high = _number(spec["low"], "low", where), _number(spec["high"], "high", where)
            if low >= high:
                raise ConfigError(f"{where}: key '{key}': low {low} must be below high {high}")
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise ConfigError(f"{where}: key '{key}': log: expected true or false, got {log!r}")
            step = _number(spec["step"], "step", where) if "step" in spec else None
            if log and (step is not None or low <= 0):
                raise ConfigError(f"{where}: key '{key}': a log range needs low > 0 and no step")
            if step is not None:
                _check_step(low, high, step, f"{where}: key '{key}'")
            held = _held(base, key)
            is_int = isinstance(held, int) and not isinstance(held, bool) and isinstance(low, int) and \
                isinstance(high, int) and (step is None or isinstance(step, int))
            dimension = Dimension(key, "int" if is_int else "float", float(low), float(high), log,
                                  None if step is None else float(step))
            candidates = [int(low), int(high)] if is_int else [float(low), float(high)]
        # each end (each choice) must be a value the experiment accepts; whatever fails, this line set it
        # (the experiment alone was read above), so every prefix of the key names it
        origins = {".".join(key.split(".")[:n]): where for n in range(1, key.count(".") + 2)}
        for value in candidates:
            load_experiment(experiment, overrides={**(overrides or {}), key: value}, origins=origins)
        dimensions.append(dimension)
    return dimensions


def trial_config(experiment: str, overrides: dict[str, Any], params: dict[str, Any]) -> ExperimentConfig:
    return load_experiment(experiment, overrides={**overrides, **params})
