"""A `Document` as one self-contained HTML file.

Everything is inside the file: figures as `data:` PNGs, the stylesheet inline, no script and no
font or image from any network (a Content-Security-Policy says so to the browser too), so it
opens offline, can be mailed or attached to a report, prints cleanly to PDF (a print
stylesheet) and reads on a phone (one column below 40 rem, tables scroll sideways).
"""
from __future__ import annotations

import base64
from html import escape

from cnnlab.reporting.document import (Block, Document, Figure, Grid, Heading, Preformatted, Section, SideBySide,
                                       Table, Text)

CSS = """
:root { --ink: #1d232a; --muted: #5b6570; --line: #d8dde3; --band: #f4f6f8; --accent: #1f5f99; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 76rem; padding: 1.5rem 1.25rem 3rem; color: var(--ink);
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { border-bottom: 2px solid var(--accent); margin-bottom: 1.5rem; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.35rem; margin: 2rem 0 .5rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.1rem; margin: 1.5rem 0 .4rem; }
.subtitle, .muted, figcaption, .source { color: var(--muted); }
.subtitle { margin: 0 0 .75rem; }
.table-wrap { overflow-x: auto; margin: .5rem 0 1rem; }
.table-wrap.tall { max-height: 28rem; overflow-y: auto; }
table { border-collapse: collapse; font-size: .92rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { padding: .3rem .65rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--band); position: sticky; top: 0; }
td.num { text-align: right; white-space: nowrap; }
tr.summary td { font-weight: 600; border-top: 2px solid var(--ink); }
tr.lab td { color: var(--muted); font-style: italic; }
.source { font-size: .8rem; margin-top: -.6rem; }
figure { margin: .75rem 0 1.25rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: .88rem; }
pre { background: var(--band); padding: .75rem; overflow-x: auto; font-size: .8rem; line-height: 1.35; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 1rem; }
/* several reports side by side: the page takes the screen's width, and a report gets a column of its own only
   where two of 48rem fit (a results table is ~46rem wide); below that they stack, each table whole */
body.wide { max-width: 124rem; }
.side-by-side { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 48rem), 1fr)); gap: 2rem; }
.side-by-side > section { min-width: 0; }
footer { margin-top: 3rem; font-size: .8rem; color: var(--muted); border-top: 1px solid var(--line); }
@media (max-width: 40rem) {
  body { font-size: 15px; padding: 1rem .75rem; }
  .grid, .side-by-side { grid-template-columns: 1fr; }
}
@media print {
  @page { margin: 1.5cm; }
  body { max-width: none; padding: 0; font-size: 10pt; }
  .table-wrap, .table-wrap.tall { overflow: visible; max-height: none; }
  th { position: static; }
  h2, h3 { break-after: avoid; }
  figure, tr, pre { break-inside: avoid; }
  .side-by-side, .grid { display: block; }
  a { color: inherit; text-decoration: none; }
}
"""

# The first lines of every report say who wrote it: `cnnlab report` overwrites only such a file.
REPORT_MARKER = "cnnlab-report"

# The page may load nothing: no script, no remote image, font or stylesheet.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _is_number(cell: str) -> bool:
    text = cell.replace("%", "").replace("±", "").replace("pts", "").replace("+", "").replace("-", "").strip()
    return bool(text) and all(part.replace(".", "", 1).isdigit() for part in text.split())


def _row_class(first_cell: str) -> str:
    if first_cell.startswith("mean"):
        return ' class="summary"'
    if first_cell.startswith("lab"):
        return ' class="lab"'
    return ""


def _table(block: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in block.header)
    body = []
    for row in block.rows:
        cells = "".join(f'<td class="num">{escape(c)}</td>' if _is_number(c) else f"<td>{escape(c)}</td>"
                        for c in row)
        body.append(f"<tr{_row_class(row[0] if row else '')}>{cells}</tr>")
    caption = f"<caption>{escape(block.caption)}</caption>" if block.caption else ""
    wrap = "table-wrap tall" if block.tall else "table-wrap"
    source = f'<p class="source">from {escape(block.source)}</p>' if block.source else ""
    return (f'<div class="{wrap}"><table>{caption}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{source}')


def _figure(block: Figure) -> str:
    data = base64.b64encode(block.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(block.caption)}">'
            f"<figcaption>{escape(block.caption)}</figcaption></figure>")


def _blocks(blocks: list[Block], depth: int) -> str:
    return "\n".join(_block(b, depth) for b in blocks)


def _block(block: Block, depth: int) -> str:
    if isinstance(block, Heading):
        level = min(6, block.level + depth)
        return f"<h{level}>{escape(block.text)}</h{level}>"
    if isinstance(block, Text):
        return f'<p class="muted">{escape(block.text)}</p>' if block.muted else f"<p>{escape(block.text)}</p>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block)
    if isinstance(block, Preformatted):
        caption = f"<h{min(6, 3 + depth)}>{escape(block.caption)}</h{min(6, 3 + depth)}>" if block.caption else ""
        return f"{caption}<pre>{escape(block.text)}</pre>"
    if isinstance(block, Grid):
        return f'<div class="grid">{"".join(_figure(f) for f in block.figures)}</div>'
    if isinstance(block, Section):
        level = min(6, 2 + depth)
        subtitle = f'<p class="subtitle">{escape(block.subtitle)}</p>' if block.subtitle else ""
        return f"<section><h{level}>{escape(block.title)}</h{level}>{subtitle}{_blocks(block.blocks, depth + 1)}</section>"
    if isinstance(block, SideBySide):
        return f'<div class="side-by-side">{"".join(_block(s, depth) for s in block.sections)}</div>'
    raise TypeError(f"no HTML for {type(block).__name__}")


def render_html(document: Document, *, footer: str = "") -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="generator" content="{REPORT_MARKER}">
<title>{escape(document.title)}</title>
<style>{CSS}</style>
</head>
<body{' class="wide"' if any(isinstance(b, SideBySide) for b in document.blocks) else ''}>
<header><h1>{escape(document.title)}</h1><p class="subtitle">{escape(document.subtitle)}</p></header>
<main>
{_blocks(document.blocks, 0)}
</main>
<footer><p>{escape(footer)}</p></footer>
</body>
</html>
"""
