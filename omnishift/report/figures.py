"""Figures shared by the commands and the report: one atomic PNG writer and the training curves.

Every figure goes through :func:`save_figure` (temp file, then rename), so a report never embeds a
half-written PNG from an interrupted run. Plots use matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from omnishift.plotting import pyplot, save_figure

__all__ = ["pyplot", "save_figure", "read_train_log", "plot_loss_curves", "plot_tradeoff"]


def read_train_log(run_dir: str | Path) -> list[dict]:
    """The per-step records of a training run (``RUN/log.jsonl``, written by the trainer).

    Raises:
        FileNotFoundError: no ``log.jsonl`` in ``run_dir`` (names the folder and what to pass).
    """
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no log.jsonl; pass the out_dir of an `omnishift train` run")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first ``window - 1`` points average what exists so far).

    Args:
        values: 1-D series.
        window: points per average (1: unchanged).

    Returns:
        Array of the same length: ``out[i] = mean(values[max(0, i-window+1) : i+1])``.
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values
    c = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(1, values.size + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def plot_loss_curves(runs: dict[str, str | Path], out_png: str | Path, window: int = 10,
                     title: str = "") -> Path:
    """Training loss per optimizer step for several runs on one plot (raw faint, smoothed bold).

    Args:
        runs: ``{label: run_dir}``; each folder holds the trainer's ``log.jsonl``.
        out_png: where the PNG goes.
        window: moving-average window in steps for the bold line.
        title: figure title.

    Returns:
        The PNG path.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (label, run_dir) in enumerate(runs.items()):
        recs = read_train_log(run_dir)
        steps = np.array([r["step"] for r in recs])
        loss = np.array([r["loss"] for r in recs])
        color = f"C{i}"
        ax.plot(steps, loss, color=color, alpha=0.25, lw=0.8)
        ax.plot(steps, smooth(loss, window), color=color, lw=2, label=f"{label} (final {smooth(loss, window)[-1]:.3f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("response-token NLL")
    ax.set_title(title or f"Stage-1 training loss ({window}-step moving average)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out_png)


def plot_tradeoff(points: dict[str, list[dict]], out_png: str | Path, title: str = "") -> Path:
    """T2T vs S2T accuracy per method with 95% CI error bars, one panel per benchmark.

    Args:
        points: ``{benchmark title: [{"label", "t2t": (acc, lo, hi) | None, "s2t": (acc, lo, hi) | None}]}``
            in fractions. Rows with both modes are points; a row with only T2T (No-FT) is a vertical
            reference line, a row with only S2T (the cascade) a horizontal one, each with its CI band.
        out_png: where the PNG goes.
        title: figure title.

    Returns:
        The PNG path.
    """
    plt = pyplot()
    if not points:
        raise ValueError("no benchmarks to plot")
    fig, axes = plt.subplots(1, len(points), figsize=(5.2 * len(points), 4.6), squeeze=False)
    for ax, (bench, rows) in zip(axes[0], points.items()):
        for i, r in enumerate(rows):
            t, s, color = r.get("t2t"), r.get("s2t"), f"C{i % 10}"
            if t and s:
                ax.errorbar([100 * t[0]], [100 * s[0]], xerr=[[100 * (t[0] - t[1])], [100 * (t[2] - t[0])]],
                            yerr=[[100 * (s[0] - s[1])], [100 * (s[2] - s[0])]], fmt="o", ms=7, capsize=4,
                            color=color, label=r["label"])
            elif t:
                ax.axvline(100 * t[0], color=color, ls="--", lw=1.2, label=f"{r['label']} (T2T)")
                ax.axvspan(100 * t[1], 100 * t[2], color=color, alpha=0.08)
            elif s:
                ax.axhline(100 * s[0], color=color, ls=":", lw=1.5, label=f"{r['label']} (S2T)")
                ax.axhspan(100 * s[1], 100 * s[2], color=color, alpha=0.08)
        vals = [100 * v for r in rows for k in ("t2t", "s2t") if r.get(k) for v in r[k]]
        lo, hi = max(-2.0, min(vals) - 5), min(102.0, max(vals) + 5)
        if hi - lo < 20:  # all near one value (e.g. untrained toy models at 0%): show a 20-point window
            mid = min(max((lo + hi) / 2, 8.0), 92.0)
            lo, hi = mid - 10, mid + 10
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("T2T accuracy % (text question)")
        ax.set_ylabel("S2T accuracy % (spoken question)")
        ax.set_title(bench)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title or "Text vs speech accuracy per method (95% CI): up and right is better")
    return save_figure(fig, out_png)
