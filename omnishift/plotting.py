"""Headless matplotlib and the one atomic PNG writer every figure goes through.

A base module (it imports nothing from the package), so that the importance analyses and the
report draw the same way without the analyses importing the report. A figure is written to a
temp file and renamed, so a report never embeds a half-written PNG from an interrupted run.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (headless machines, CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png: str | Path, dpi: int = 120, tight: bool = True) -> Path:
    """Write ``fig`` to ``out_png`` atomically and close it.

    Args:
        fig: a matplotlib figure.
        out_png: destination; parent folders are created.
        dpi: resolution.
        tight: crop to the drawn content (``bbox_inches="tight"``).

    Returns:
        The path written.
    """
    plt = pyplot()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
