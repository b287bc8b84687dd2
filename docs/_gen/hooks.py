"""MkDocs hook: the reference pages and the benchmark pages, generated from the code and the JSON at each build.

    reference/cli.md       every command and option, from cnnlab's argparse parser
    reference/config.md    every configuration key, from the config dataclasses: type, default, range, choices
    reference/run-folder.md  the on-disk layout, from cnnlab/layout.py and training/run_folder.py
    benchmarks/<name>.md   each benchmarks/results/<name>.json as tables, with the command and the machine

Nothing here is written to disk: the pages are added to the build as generated files, so a reference cannot
drift from the code and a figure on a benchmark page is the figure in its JSON. `tests/test_docs.py` checks
both against the parser, the dataclasses and the JSON files themselves.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import re
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MAX_ROWS = 60  # rows of one table on a benchmark page; the JSON holds them all


# ----------------------------------------------------------------------------- the command line

def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _option_row(action: argparse.Action) -> list[str]:
    name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.metavar or action.dest}`"
    takes = "" if action.nargs == 0 else f"`{action.metavar or action.dest.upper()}`"
    if action.nargs in ("+", "*"):
        takes += " …"
    default = "" if action.default in (None, argparse.SUPPRESS, False, []) or action.nargs == 0 else \
        f"`{action.default}`"
    choices = ", ".join(f"`{c}`" for c in action.choices) if action.choices else ""
    help_text = (action.help or "").replace("%%", "%")
    if action.required:
        help_text = "required. " + help_text
    return [name, takes, default, _cell(help_text + (f" (one of {choices})" if choices else ""))]


def parser_commands() -> dict[str, argparse.ArgumentParser]:
    from cnnlab.cli.parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def cli_reference() -> str:
    from cnnlab.cli.parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    lines = ["# Command-line reference", "",
             "Generated from cnnlab's own parser (`cnnlab/cli/parser.py`) at each build of this site: every command "
             "and every option, as `cnnlab COMMAND --help` prints them.", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} |" for name in sub.choices]
    lines += ["", "Global options: `--version`, `--debug` (full tracebacks instead of one line). Every command takes "
              "`-h` / `--help`.", ""]
    for name, command in sub.choices.items():
        lines += [f"## {name}", "", _cell(command.description or helps.get(name, "")), "",
                  "```", command.format_usage().strip().replace("usage: ", ""), "```", "",
                  "| argument | value | default | meaning |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(_option_row(a)) + " |" for a in command._actions
                  if not isinstance(a, argparse._HelpAction)]
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the configuration

def _type_name(annotation) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "")


def config_keys() -> list[dict]:
    """Every key of an experiment file: dotted name, type, default, range, choices and help."""
    from cnnlab.config import ExperimentConfig

    out = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints.get(f.name, f.type)
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")
                continue
            meta = f.metadata or {}
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
                continue
            choices = meta.get("choices")
            if callable(choices):
                choices = choices()
            bounds = [f">= {meta['min']}" if meta.get("min") is not None else "",
                      f"> {meta['gt']}" if meta.get("gt") is not None else "",
                      f"<= {meta['max']}" if meta.get("max") is not None else ""]
            items = meta.get("item_choices") or ()
            item_range = meta.get("item_range")
            out.append({"key": prefix + f.name, "type": _type_name(kind), "default": default,
                        "range": " and ".join(b for b in bounds if b)
                                 + (f"each in [{item_range[0]}, {item_range[1]}]" if item_range else ""),
                        "choices": list(choices or items), "help": meta.get("help", "")})

    walk(ExperimentConfig, "")
    return out


def config_reference() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the configuration's dataclasses (`cnnlab/config.py`) at each build of this site: every "
             "key an experiment file (or `--set KEY=VALUE`) may set, with its type, default, range and choices. "
             "An unknown key or a value out of range is refused with the file, line and key named.", ""]
    groups: dict[str, list[dict]] = {}
    for key in config_keys():
        groups.setdefault(key["key"].split(".")[0] if "." in key["key"] else "(top level)", []).append(key)
    for group, keys in groups.items():
        lines += [f"## {group}", "", "| key | type | default | range | choices | meaning |", "|---|---|---|---|---|---|"]
        for k in keys:
            lines.append(f"| `{k['key']}` | `{_cell(k['type'])}` | `{_cell(json.dumps(k['default']))}` | "
                         f"{_cell(k['range'])} | {_cell(', '.join(f'`{c}`' for c in k['choices']))} | "
                         f"{_cell(k['help'])} |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run folder

def layout_reference() -> str:
    from cnnlab import layout
    from cnnlab.training import run_folder

    return "\n".join([
        "# What a run writes", "",
        "Generated from the docstrings of `cnnlab/layout.py` (every folder cnnlab writes) and "
        "`cnnlab/training/run_folder.py` (one run's folder) at each build of this site.", "",
        "## The folders", "", "```", (layout.__doc__ or "").strip(), "```", "",
        "## One run's folder", "", "```", (run_folder.__doc__ or "").strip(), "```", ""])


# ----------------------------------------------------------------------------- benchmarks

def format_number(value) -> str:
    """How a JSON number is shown: integers whole, other numbers to 6 significant digits."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _inline(value) -> str:
    """A value inside a cell: numbers as format_number writes them, lists and mappings spelled out whole."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_inline(v)}" for k, v in value.items()) + "}"
    return str(value)


def _show(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return ", ".join(format_number(v) for v in value)
    text = _inline(value) if isinstance(value, (list, dict)) else str(value)
    return "`" + _cell(text).replace("`", "'") + "`"  # as written: no Markdown of its own (links, emphasis)


def _render(value, title: str, depth: int, lines: list[str]) -> None:
    heading = "#" * min(6, depth)
    if isinstance(value, dict):
        texts = {k: v for k, v in value.items() if isinstance(v, str) and "\n" in v}
        flat = {k: v for k, v in value.items() if k not in texts and (
            _scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v)))}
        if title:
            lines += [f"{heading} {title}", ""]
        for k, v in texts.items():  # a table or note the benchmark printed: shown as text, as it was written
            lines += [f"{_cell(k)}:", "", "```text", v.rstrip(), "```", ""]
        if flat:
            lines += ["| | |", "|---|---|"] + [f"| {_cell(k)} | {_show(v)} |" for k, v in flat.items()] + [""]
        for k, v in value.items():
            if k not in flat and k not in texts:
                _render(v, k, depth + 1, lines)
    elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        columns = list(dict.fromkeys(k for r in value for k, v in r.items()
                                     if _scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v))))
        lines += [f"{heading} {title}", "", "| " + " | ".join(_cell(c) for c in columns) + " |",
                  "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_show(r.get(c)) for c in columns) + " |" for r in value[:MAX_ROWS]]
        if len(value) > MAX_ROWS:
            lines.append(f"\n{len(value) - MAX_ROWS} more rows in the JSON file.")
        lines.append("")
        for i, r in enumerate(value[:MAX_ROWS]):
            for k, v in r.items():
                if k not in columns:
                    _render(v, f"{title} [{i}] {k}", depth + 1, lines)
    else:
        lines += [f"{heading} {title}", "", _show(value), ""]


def _script_doc(name: str) -> tuple[str, str | None]:
    """The benchmark script that wrote results/<name>.json (its docstring and name), when it can be told."""
    candidates = [ROOT / "benchmarks" / f"{name}.py"]
    parts = name.split("_")
    candidates += [ROOT / "benchmarks" / f"{'_'.join(parts[:k])}.py" for k in range(len(parts) - 1, 0, -1)]
    for path in candidates:
        if path.is_file():
            return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "", path.name
    return "", None


def benchmark_page(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    doc, script = _script_doc(path.stem)
    lines = [f"# {path.stem}", ""]
    if doc:
        lines += ["```", doc.strip(), "```", ""]
    lines += [f"Produced by `python benchmarks/{script}`" if script else "Produced by a benchmark script",
              f"; the figures below are `benchmarks/results/{path.name}`, rendered at each build.", ""]
    machine = data.pop("machine", None) if isinstance(data, dict) else None
    if machine:
        lines += ["**Machine:** " + ", ".join(f"{k} {_show(v)}" for k, v in machine.items()), ""]
    _render(data, "", 2, lines)
    return "\n".join(lines)


def benchmark_pages() -> dict[str, str]:
    pages = {f"benchmarks/{p.stem}.md": benchmark_page(p) for p in sorted(RESULTS.glob("*.json"))}
    index = ["# Benchmarks", "", "Each page is one `benchmarks/results/*.json` file, rendered at each build: the "
             "figures are the file's. `benchmarks/README.md` says what each script measures; run one with "
             "`python benchmarks/NAME.py`.", ""]
    index += [f"- [{Path(uri).stem}]({Path(uri).name})" for uri in pages]
    return {"benchmarks/index.md": "\n".join(index) + "\n", **pages}


# ----------------------------------------------------------------------------- figures quoted in prose

# `{{ figure NAME PATH FORMAT }}` in a page is the value at PATH (keys and list positions, dot-separated) of
# benchmarks/results/NAME.json, written as FORMAT: a figure a page quotes is the figure in the JSON, and a
# path that no longer exists fails the build.
FIGURE = re.compile(r"\{\{\s*figure\s+(\S+)\s+(\S+)\s+(\S+)\s*\}\}")


def _percentages(values) -> list[float]:
    return [100 * v for v in (values if isinstance(values, list) else [values])]


FIGURE_FORMATS = {
    "pct": lambda v: f"{100 * v:.2f} %",  # 0.4597 → 45.97 %
    "pct1": lambda v: f"{100 * v:.1f} %",
    "mean_pct": lambda v: f"{sum(_percentages(v)) / len(v):.2f} %",  # a list of seeds' figures → their mean
    "pm_pct": lambda v: __import__("cnnlab.reporting.tables", fromlist=["pm"]).pm(v, percent=True),  # mean ± std
    "each_pct": lambda v: ", ".join(f"{x:.2f}" for x in _percentages(v)),  # each seed's
    # the mean of a list or of a mapping's values (e.g. the recall of each of the rarest classes), one decimal
    "avg_pct1": lambda v: f"{100 * sum(v.values() if isinstance(v, dict) else v) / len(v):.1f} %",
    "x2": lambda v: f"{v:.2f}×",
    "s1": lambda v: f"{v:,.1f} s",
    "f0": lambda v: f"{v:,.0f}",
    "mega1": lambda v: f"{v / 1e6:.1f} M",  # parameters
    "giga2": lambda v: f"{v / 1e9:.2f} G",  # multiply-adds
    "min1": lambda v: f"{v / 60:.1f} minutes",  # seconds
    "text": str,
    "f1": lambda v: f"{v:.1f}",
    "f2": lambda v: f"{v:.2f}",
    "f4": lambda v: f"{v:.4f}",
    "mean_f4": lambda v: f"{sum(v) / len(v):.4f}",
}


def figure(name: str, path: str, fmt: str) -> str:
    """The figure at `path` of benchmarks/results/`name`.json, as `fmt` writes it (ValueError naming what is
    missing)."""
    source = RESULTS / f"{name}.json"
    if not source.is_file():
        raise ValueError(f"figure {name} {path}: no benchmarks/results/{name}.json")
    value = json.loads(source.read_text(encoding="utf-8"))
    for key in path.split("."):
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValueError(f"figure {name} {path}: {source.name} has no {key!r} there") from None
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"figure {name} {path}: unknown format {fmt!r} (one of {', '.join(FIGURE_FORMATS)})")
    return FIGURE_FORMATS[fmt](value)


def quote_figures(markdown: str) -> str:
    return FIGURE.sub(lambda m: figure(*m.groups()), markdown)


def on_page_markdown(markdown, page, config, files):
    try:
        return quote_figures(markdown)
    except ValueError as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: {exc}") from None


def generated_pages() -> dict[str, str]:
    return {"reference/cli.md": cli_reference(), "reference/config.md": config_reference(),
            "reference/run-folder.md": layout_reference(), **benchmark_pages()}


def on_config(config):
    """The Benchmarks section of the navigation: the index, then one page per results file."""
    pages = [{"Overview": "benchmarks/index.md"}] + [{Path(uri).stem: uri} for uri in benchmark_pages()
                                                     if not uri.endswith("index.md")]
    config["nav"] = [{"Benchmarks": pages} if isinstance(item, dict) and "Benchmarks" in item else item
                     for item in config["nav"]]
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for uri, content in generated_pages().items():
        files.append(File.generated(config, uri, content=content))
    return files
