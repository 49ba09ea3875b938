"""Render a report in headless Chromium and save a PNG screenshot (a check that it really displays).

``python -m omnishift.report.screenshot runs/demo/report.html shot.png`` — needs the ``chromium``
binary (Debian: ``apt-get install -y chromium``). No network is touched: the report is
self-contained and background networking is disabled.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: str | Path, out_png: str | Path, width: int = 1280, height: int = 2400,
               timeout: float = 120.0) -> Path:
    """Open ``html`` in headless Chromium and write a ``width`` x ``height`` screenshot.

    Raises:
        FileNotFoundError: no Chromium on PATH (says how to install it) or no HTML file.
        RuntimeError: Chromium failed or wrote no screenshot (its stderr tail is included).
    """
    html, out_png = Path(html).resolve(), Path(out_png).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"{html} not found")
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH: install it (Debian: apt-get install -y chromium)")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="omnishift-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={out_png}", html.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out_png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return out_png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m omnishift.report.screenshot REPORT.html OUT.png")
    print(screenshot(sys.argv[1], sys.argv[2]))
