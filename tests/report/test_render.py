"""The report really renders: headless Chromium screenshot of a built report (skipped without chromium)."""

from __future__ import annotations

import pytest

from omnishift.report.build import build_report
from omnishift.report.screenshot import find_chromium, screenshot


@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path, fake_run):
    html = build_report(fake_run(tmp_path))
    png = screenshot(html, tmp_path / "shot.png", width=1000, height=1400)
    from PIL import Image

    img = Image.open(png).convert("L")
    assert img.size == (1000, 1400)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # text and figures drawn, not a blank page
