"""Every field cnnlab reads from a file it did not just write, checked: its type and its range, in one line.

A file a user hands us — a run's `results.json`, the record inside `model.safetensors` or an exported
graph, a tuning study's `study.json`, a Hub-style folder's `config.json` — may be damaged, edited or
hostile. `check(record, SCHEMA, source)` walks a schema of field rules and raises one `CnnlabError`
naming the file and the field (`model.safetensors: field 'input_size': expected a list of 3 integers
from 1 to 4096, got [3, 100000, 100000]`) instead of a KeyError, a MemoryError or a silent, untrainable
run. Fields a schema does not name are passed through untouched (a later cnnlab may add some).

    SCHEMA = {"class_names": texts(min_len=1), "crop_ratio": number(above=0, at_most=1, default=0.875)}
    record = check(json.loads(text), SCHEMA, "model.onnx")
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from cnnlab.errors import CheckpointError, CnnlabError

_REQUIRED = object()


@dataclass(frozen=True)
class Rule:
    """What one field must be: `test(value) -> bool`, said as `expected`; absent → `default` (or an error)."""

    test: Callable[[Any], bool]
    expected: str
    default: Any = _REQUIRED

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError, OverflowError):
            return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def integer(*, at_least: int | None = None, at_most: int | None = None, default: Any = _REQUIRED) -> Rule:
    bounds = _bounds(at_least, at_most, None)
    return Rule(lambda v: _is_int(v) and (at_least is None or v >= at_least) and (at_most is None or v <= at_most),
                f"an integer{bounds}", default)


def number(*, at_least: float | None = None, at_most: float | None = None, above: float | None = None,
           default: Any = _REQUIRED) -> Rule:
    return Rule(lambda v: _is_number(v) and (at_least is None or v >= at_least) and (at_most is None or v <= at_most)
                and (above is None or v > above), f"a finite number{_bounds(at_least, at_most, above)}", default)


def text(*, default: Any = _REQUIRED, max_len: int = 10_000) -> Rule:
    return Rule(lambda v: isinstance(v, str) and 0 < len(v) <= max_len, "a non-empty string", default)


def choice(*values: str, default: Any = _REQUIRED) -> Rule:
    return Rule(lambda v: isinstance(v, str) and v in values, f"one of {', '.join(values)}", default)


def boolean(*, default: Any = _REQUIRED) -> Rule:
    return Rule(lambda v: isinstance(v, bool), "true or false", default)


def mapping(*, default: Any = _REQUIRED) -> Rule:
    return Rule(lambda v: isinstance(v, dict), "a mapping", default)


def list_of(item: Rule, *, length: int | None = None, min_len: int = 0, max_len: int = 1_000_000,
            default: Any = _REQUIRED) -> Rule:
    count = (f"{length} values" if length is not None else f"at least {min_len} value{'s' if min_len > 1 else ''}"
             if min_len else "values")
    return Rule(lambda v: isinstance(v, list) and (length is None or len(v) == length) and min_len <= len(v) <= max_len
                and all(item(x) for x in v), f"a list of {count}, each {item.expected}", default)


def optional(rule: Rule, *, default: Any = None) -> Rule:
    return Rule(lambda v: v is None or rule(v), f"{rule.expected} or null", default)


def texts(*, min_len: int = 0, max_len: int = 1_000_000, default: Any = _REQUIRED) -> Rule:
    return list_of(text(), min_len=min_len, max_len=max_len, default=default)


def _bounds(at_least, at_most, above) -> str:
    parts = [f">= {at_least}" if at_least is not None else "", f"> {above}" if above is not None else "",
             f"<= {at_most}" if at_most is not None else ""]
    shown = " and ".join(p for p in parts if p)
    return f" {shown}" if shown else ""


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def check(record: Any, schema: dict[str, Rule], source: Any, *, error: type[CnnlabError] = CheckpointError,
          what: str = "a record") -> dict:
    """`record` checked against `schema`; returns a copy with absent optional fields at their defaults."""
    if not isinstance(record, dict):
        raise error(f"{source}: expected {what} (a mapping of fields), got {type(record).__name__}")
    out = dict(record)
    for name, rule in schema.items():
        if name not in record or (record[name] is None and rule.default is not _REQUIRED and not rule(None)):
            if rule.default is _REQUIRED:
                raise error(f"{source}: field '{name}' is missing ({rule.expected} expected)")
            out[name] = rule.default
            continue
        if not rule(record[name]):
            raise error(f"{source}: field '{name}': expected {rule.expected}, got {_shown(record[name])}")
    return out
