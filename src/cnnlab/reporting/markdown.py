"""A `Document` as Markdown, its figures written as PNG files into a folder beside it."""
from __future__ import annotations

from pathlib import Path

from cnnlab.fileio import atomic_write_bytes
from cnnlab.reporting.document import (Block, Document, Figure, Grid, Heading, Preformatted, Section, SideBySide,
                                       Table, Text)
from cnnlab.reporting.tables import render_table


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


class _Writer:
    def __init__(self, image_dir: Path):
        self.image_dir, self.used = image_dir, set()

    def figure(self, block: Figure) -> str:
        name, stem, n = block.name, Path(block.name).stem, 2
        while name in self.used:  # two seeds' curves.png must not overwrite each other
            name, n = f"{stem}-{n}.png", n + 1
        self.used.add(name)
        atomic_write_bytes(self.image_dir / name, block.png)
        return f"![{block.caption}]({self.image_dir.name}/{name})\n\n*{block.caption}*"

    def blocks(self, blocks: list[Block], depth: int) -> str:
        return "\n\n".join(self.block(b, depth) for b in blocks)

    def block(self, block: Block, depth: int) -> str:
        if isinstance(block, Heading):
            return "#" * min(6, block.level + depth) + " " + block.text
        if isinstance(block, Text):
            return f"*{block.text}*" if block.muted else block.text
        if isinstance(block, Table):
            table = render_table([_cell(h) for h in block.header], [[_cell(c) for c in r] for r in block.rows],
                                 markdown=True)
            caption = f"**{block.caption}**\n\n" if block.caption else ""
            source = f"\n\n<sub>from {block.source}</sub>" if block.source else ""
            return f"{caption}{table}{source}"
        if isinstance(block, Figure):
            return self.figure(block)
        if isinstance(block, Preformatted):
            caption = "#" * min(6, 3 + depth) + f" {block.caption}\n\n" if block.caption else ""
            return f"{caption}```\n{block.text.rstrip()}\n```"
        if isinstance(block, Grid):
            return "\n\n".join(self.figure(f) for f in block.figures)
        if isinstance(block, Section):
            subtitle = f"\n\n{block.subtitle}" if block.subtitle else ""
            return "#" * min(6, 2 + depth) + f" {block.title}{subtitle}\n\n{self.blocks(block.blocks, depth + 1)}"
        if isinstance(block, SideBySide):  # Markdown has no columns: one after the other
            return "\n\n".join(self.block(s, depth) for s in block.sections)
        raise TypeError(f"no Markdown for {type(block).__name__}")


def render_markdown(document: Document, out: Path, *, footer: str = "") -> str:
    """The Markdown text for `out`; figures go to `<out stem>_files/` beside it."""
    image_dir = out.parent / f"{out.stem}_files"
    image_dir.mkdir(parents=True, exist_ok=True)
    body = _Writer(image_dir).blocks(document.blocks, 0)
    return f"# {document.title}\n\n{document.subtitle}\n\n{body}\n\n---\n\n<sub>{footer}</sub>\n"
