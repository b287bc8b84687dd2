"""A report as a list of blocks (heading, text, table, figure, ...), rendered to HTML or Markdown.

The studies build blocks from run folders; `reporting/html.py` and `reporting/markdown.py`
render them. Keeping the content apart from its format means the HTML page and the Markdown
file cannot disagree about a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str
    muted: bool = False


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    # the source of the numbers (a file in the run folder): shown under the table, so a reader can check it
    source: str = ""
    tall: bool = False  # many rows: scrolls on screen, printed whole


@dataclass
class Figure:
    png: bytes
    caption: str
    name: str  # file name for the Markdown format, which keeps images beside the text


@dataclass
class Preformatted:
    text: str
    caption: str = ""


@dataclass
class Grid:
    """Figures side by side (several seeds' curves): one column on a phone."""
    figures: list[Figure]


@dataclass
class Section:
    """A titled part of the report; nested sections of several paths are shown side by side."""
    title: str
    blocks: list["Block"] = field(default_factory=list)
    subtitle: str = ""


@dataclass
class SideBySide:
    sections: list[Section]


Block = Union[Heading, Text, Table, Figure, Preformatted, Grid, Section, SideBySide]


@dataclass
class Document:
    title: str
    subtitle: str
    blocks: list[Block]
