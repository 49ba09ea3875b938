"""The HTML report is self-contained and the build reads only the stage outputs."""

from __future__ import annotations

import base64
import re

import pytest
from omnishift.report.build import build_report
from omnishift.report.html import Figure, Section, render_html
from omnishift.report.tables import Table

PNG_1PX = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def external_refs(text: str) -> list[str]:
    """Every src/href that is not an inline data URI or an in-page anchor."""
    found = re.findall(r"""(?:src|href)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", text, flags=re.I)
    return [v for groups in found for v in groups if v and not v.startswith(("data:", "#"))]


def test_render_html_embeds_figures(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(PNG_1PX)
    sec = Section("a", "A <section>", ["x < y"], [Table("t", "cap", ["h"], [["1"]], {(0, 0)})], [Figure(png, "fig")])
    html = render_html("T", [sec])
    assert external_refs(html) == []
    assert "data:image/png;base64," + base64.b64encode(PNG_1PX).decode() in html
    assert "<td class=\"num\"><strong>1</strong></td>" in html and "A &lt;section&gt;" in html and "x &lt; y" in html
    assert external_refs('<img src="figs/a.png"><a href="https://x.org">') == ["figs/a.png", "https://x.org"]


def test_build_report_from_partial_run(tmp_path, fake_run):
    run = fake_run(tmp_path)
    html = build_report(run)
    text = html.read_text()
    assert external_refs(text) == []
    md = (run / "report.md").read_text()
    assert "| text | 8 | 1.00e+05 | 8.1 | 9 |" in md.replace("| m | ", "| ")
    assert "| No-FT | **50.0 (40.0–60.0)** | - |" in md
    assert "| Cascade (ASR → LLM) | - | **75.0 (65.0–85.0)** |" in md
    assert "Table 3 — rank ablation: not available yet (stage 'ablation' has not finished)." in md
    assert "Fig. 4 — parameter-change heatmaps: not available yet" in md
    assert (run / "report" / "figures" / "tradeoff_t2t_s2t.png").read_bytes()[:4] == b"\x89PNG"
    assert "tradeoff_t2t_s2t.png" in md and text.count("data:image/png;base64,") == 1
    assert (run / "report" / "tables" / "table2_qa.csv").is_file()


def test_build_report_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an `omnishift run` folder"):
        build_report(tmp_path)


def test_cli_report(tmp_path, capsys, fake_run):
    from omnishift.cli import main

    run = fake_run(tmp_path)
    assert main(["report", str(run), "--title", "My title"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    assert "<title>My title</title>" in (run / "report.html").read_text()
