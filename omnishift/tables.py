"""One table, three renderings: :class:`Table` -> Markdown, CSV (and HTML in :mod:`omnishift.report.html`).

A base module (it imports nothing of the package) so that every layer that writes a table — the
evaluation's ``eval-table`` and rank ablation, the importance passes, the report — writes it the
same way. Cells are strings; ``bold`` marks the best value of a column (Markdown ``**x**``, HTML
``<strong>``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field


@dataclass
class Table:
    """A captioned table: ``header`` and ``rows`` of strings, ``bold`` cells as (row, column) indices."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: set = field(default_factory=set)
    note: str = ""

    def cell(self, r: int, c: int) -> str:
        return self.rows[r][c]


def to_markdown(t: Table) -> str:
    """GitHub Markdown of ``t`` (caption as a bold line above, note below)."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"**{t.caption}**", "", "| " + " | ".join(esc(h) for h in t.header) + " |",
             "|" + " --- |" * len(t.header)]
    for i, row in enumerate(t.rows):
        lines.append("| " + " | ".join(f"**{esc(v)}**" if (i, j) in t.bold else esc(v) for j, v in enumerate(row))
                     + " |")
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.header)
    w.writerows(t.rows)
    return buf.getvalue()
