"""Self-contained HTML and Markdown from one report structure.

The HTML embeds every figure as a base64 ``data:`` URI and carries its own CSS, so the file can be
mailed or opened from anywhere: no ``src`` or ``href`` points outside the document (links are
in-page ``#anchors`` only). The Markdown links the PNGs beside it.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from omnishift.report.tables import Table, to_markdown


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    """A report section: paragraphs, then tables, then figures (each may be empty)."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 .3em;font-size:.92em}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left}th{background:#f0f0f0}td.num{text-align:right}
caption{caption-side:top;font-weight:bold;text-align:left;padding-bottom:.3em}
.note{color:#555;font-size:.88em;margin:.2em 0 1em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#444;font-size:.9em}
nav ul{columns:2}code{background:#f4f4f4;padding:0 .2em}
"""


_NUM = re.compile(r"^(?:[-+×]?\d|-$)")  # numbers, ×scores and the "-" of a missing cell align right


def _table_html(t: Table) -> str:
    out = [f'<table id="{html.escape(t.name)}"><caption>{html.escape(t.caption)}</caption><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in t.header]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(t.rows):
        cells = []
        for j, v in enumerate(row):
            cls = ' class="num"' if _NUM.match(str(v)) else ""
            v = html.escape(str(v))
            cells.append(f"<td{cls}><strong>{v}</strong></td>" if (i, j) in t.bold else f"<td{cls}>{v}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if t.note:
        out.append(f'<p class="note">{html.escape(t.note)}</p>')
    return "".join(out)


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def render_html(title: str, sections: list[Section], intro: list[str] = ()) -> str:
    """One HTML document; figures inlined as base64 PNG."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro]
    parts.append("<nav><ul>" + "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
                 + "</ul></nav>")
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        parts += [_table_html(t) for t in s.tables]
        for f in s.figures:
            parts.append(f'<figure><img alt="{html.escape(f.caption)}" src="{data_uri(f.path)}">'
                         f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(title: str, sections: list[Section], md_dir: Path, intro: list[str] = ()) -> str:
    """Markdown with the same content; figures linked relative to ``md_dir`` (the file's folder)."""
    out = [f"# {title}", ""]
    for p in intro:
        out += [p, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out += [to_markdown(t)]
        for f in s.figures:
            rel = Path(os.path.relpath(Path(f.path).resolve(), Path(md_dir).resolve())).as_posix()
            out += [f"![{f.caption}]({rel})", "", f"*{f.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"
