"""Every `cnnlab` command the README and the documentation site (docs/**/*.md) show is accepted by the parser as
written, so a command a reader copies cannot fail for a reason the parser knows (an option a command lacks, a
value out of range, a typo).

A runnable line (in a code block, or in `inline code`) is parsed whole by the real argument parser; a synopsis
line (`cnnlab run MODEL [--config FILE] ...`) must name a real command and only options that command takes.
The cheap ones (`cnnlab summary`, `cnnlab list`) are run as written. The commands that run on data are run
elsewhere: the runnable tutorials' in test_tutorials.py, `cnnlab run` in test_training.py, the Python examples
in test_learner.py, the notebook in test_notebook.py.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from cnnlab.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _commands() -> list[str]:
    return list(dict.fromkeys(c for page in PAGES for c in _commands_in(page)))


def _commands_in(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    found = []
    for body in re.findall(r"```\w*\n(.*?)```", text, re.S):
        for line in body.splitlines():
            found += _cnnlab_part(line)
    prose = re.sub(r"```\w*\n.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        found += _cnnlab_part(span)
    return found


def _cnnlab_part(line: str) -> list[str]:
    """The `cnnlab ...` command in a line (after `pip ... &&`, `torchrun ... -m`, an env assignment), comment cut."""
    line = line.split("  #")[0].split(" # ")[0].strip()
    match = re.search(r"(?:^|&& |-m |^\S+=\S+ )(cnnlab (?:--debug |--version)?.*)$", line)
    return [match.group(1).strip()] if match and not match.group(1).startswith("cnnlab[") else []


def _synopsis(command: str) -> bool:
    return any(mark in command for mark in ("[", "...", "|", "…")) or re.search(r"\b[A-Z_]{4,}\b", command.split()[1]
                                                                                  if len(command.split()) > 1 else "")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = _commands()
# Commands that need no data and run in a moment: each one a page shows runs too. The commands that train
# run in the runnable tutorials (test_tutorials.py) and on data elsewhere.
CHEAP = ("summary", "list")


def test_the_readme_and_the_site_show_commands():
    assert len(COMMANDS) > 40, COMMANDS  # a walker that finds none would pass vacuously
    assert len(_commands_in(README)) > 10
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200  # the manual is the site


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses(command, capsys):
    parser = build_parser()
    words = shlex.split(command.replace("<stamp>", "STAMP"))[1:]
    if words and words[0] == "--debug":
        words = words[1:]
    if not words or words[0] in ("...", "--help", "-h", "--version"):
        return
    commands = _subparsers(parser)
    assert words[0] in commands, f"{command!r}: no command {words[0]!r}"
    if len(words) == 1:  # the command named in prose (`cnnlab summary`), not an invocation
        return
    if _synopsis(command):
        known = {option for action in commands[words[0]]._actions for option in action.option_strings}
        named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command)) - {"--debug"}
        assert named <= known, f"{command!r}: {sorted(named - known)} not options of `cnnlab {words[0]}`"
        return
    try:
        parser.parse_args(words)
    except SystemExit as exc:
        raise AssertionError(f"{command!r} does not parse: {capsys.readouterr().err.strip()}") from exc
    if words[0] in CHEAP and not any(re.fullmatch(r"[A-Z][A-Z_]{2,}", w) for w in words):  # the cheap ones run
        from cnnlab.cli.main import main

        code = main(words)
        assert code in (0, None), f"{command!r} exited with {code}: {capsys.readouterr().err.strip()}"
        assert capsys.readouterr().out.strip(), f"{command!r} printed nothing"
