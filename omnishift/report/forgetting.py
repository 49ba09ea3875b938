"""Forgetting curves: drift from the starting model along Stage 1, per method, drawn and tabulated.

Reads the points a training run's probe wrote (``RUN/probes/step-NNNNNNNN.json``, see
:class:`omnishift.evaluate.drift.DriftProbe`). The table compares every method's last point with a
reference method's (Full-FT by default) *paired* over the same held-out prompts, which is how the
paper's finding (d) reads at this scale: do the mitigations keep text closer to the base?
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.evaluate.drift import MEASURES
from omnishift.evaluate.scoring import paired_bootstrap_ci
from omnishift.plotting import pyplot, save_figure
from omnishift.tables import Table

LABELS = {"kl": "KL(base ‖ model) per token", "dnll": "ΔNLL of the base answers per token",
          "flip": "answer-flip rate"}


def read_curve(run_dir: str | Path) -> list[dict]:
    """The probe points of one training run, by step (empty when it was trained without a probe)."""
    folder = Path(run_dir) / "probes"
    points = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("step-*.json"))]
    return sorted(points, key=lambda p: p["step"])


def plot_forgetting_curves(runs: dict[str, str | Path], out_png: str | Path, title: str = "") -> Path:
    """One panel per drift measure: mean and 95 % interval against the optimizer step, a line per run."""
    curves = {label: read_curve(d) for label, d in runs.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        raise ValueError(f"no probe points under {[str(d) for d in runs.values()]}: train with a drift probe "
                         "(train.drift in an experiment, or train(probe=DriftProbe(...)))")
    shown = [m for m in MEASURES if any(m in p for c in curves.values() for p in c)]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4), squeeze=False)
    for ax, m in zip(axes[0], shown):
        for label, points in curves.items():
            pts = [p for p in points if m in p]
            steps = [p["step"] for p in pts]
            ax.plot(steps, [p[m] for p in pts], marker="o", label=label)
            ax.fill_between(steps, [p[f"{m}_ci95"][0] for p in pts], [p[f"{m}_ci95"][1] for p in pts], alpha=0.2)
        ax.set_xlabel("optimizer step")
        ax.set_title(LABELS[m], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _cell(mean: float, ci: list | tuple, digits: int) -> str:
    return f"{mean:.{digits}f} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"


def forgetting_table(runs: dict[str, str | Path], reference: str | None = None) -> Table:
    """Each run's last probe point, and its paired difference to ``reference``'s last point.

    Args:
        runs: ``{label: run_dir}``.
        reference: the label the others are compared with (default: the first).
    """
    last = {label: c[-1] for label, d in runs.items() if (c := read_curve(d))}
    if not last:
        raise ValueError("no run has probe points")
    reference = reference or next(iter(last))
    if reference not in last:
        raise ValueError(f"reference {reference!r} has no probe points; runs with points: {sorted(last)}")
    ref = last[reference]
    header = ["Method", "Step"] + [LABELS[m] for m in MEASURES] + [f"{m} − {reference}" for m in ("kl", "flip")]
    rows = []
    for label, p in last.items():
        row = [label, str(p["step"])]
        row += [_cell(p[m], p[f"{m}_ci95"], 3 if m == "flip" else 4) if m in p else "-" for m in MEASURES]
        for m in ("kl", "flip"):
            a, b = p.get("per_item", {}).get(m), ref.get("per_item", {}).get(m)
            ok = label != reference and a and b and len(a) == len(b) and None not in a and None not in b
            row.append(_cell(*_paired(a, b), 4 if m == "kl" else 3) if ok else "-")
        rows.append(row)
    return Table("forgetting", f"Drift from the starting model at each run's last probe point (95 % bootstrap "
                 f"intervals over prompts; differences paired with {reference})", header, rows)


def _paired(a: list, b: list) -> tuple[float, tuple[float, float]]:
    mean, lo, hi = paired_bootstrap_ci(a, b)
    return mean, (lo, hi)
