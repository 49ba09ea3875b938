"""Forgetting curves: drift from the starting model along Stage 1, per method, drawn and tabulated.

Reads the points a training run's probe wrote (``RUN/probes/step-NNNNNNNN.json``, see
:class:`omnishift.evaluate.drift.DriftProbe`): per prompt set (held-out instructions, a benchmark's
questions as text), KL, ΔNLL, flips and, on QA questions, T2T accuracy. The table compares every
method's last point with a reference method's (Full-FT by default) *paired* over the same prompts,
which is how the paper's finding (d) reads at this scale: do the mitigations keep text closer to
the base, and its T2T where it was?
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.evaluate.drift import MEASURES
from omnishift.evaluate.scoring import paired_bootstrap_ci
from omnishift.plotting import pyplot, save_figure
from omnishift.tables import Table

LABELS = {"kl": "KL(base ‖ model) per token", "dnll": "ΔNLL of the base answers per token",
          "flip": "answer-flip rate", "correct": "T2T accuracy"}
PAIRED = ("kl", "flip", "correct")  # the differences the table pairs with the reference
LEGACY_SET = "heldout"  # points written before probes had named sets measured held-out instructions only


def read_curve(run_dir: str | Path) -> list[dict]:
    """The probe points of one training run, by step, each ``{"step", "sets": {SET: summary}}``
    (empty when it was trained without a probe)."""
    folder = Path(run_dir) / "probes"
    points = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("step-*.json"))]
    for p in points:
        if "sets" not in p:
            p["sets"] = {LEGACY_SET: {k: v for k, v in p.items() if k not in ("step", "probe")}}
    return sorted(points, key=lambda p: p["step"])


def _panels(curves: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """``(set, measure)`` pairs some point has, sets in first-seen order."""
    sets = list(dict.fromkeys(name for c in curves.values() for p in c for name in p["sets"]))
    return [(n, m) for n in sets for m in MEASURES if any(m in p["sets"].get(n, {}) for c in curves.values() for p in c)]


def plot_forgetting_curves(runs: dict[str, str | Path], out_png: str | Path, title: str = "") -> Path:
    """One panel per prompt set and measure: mean and 95 % interval against the optimizer step, a line per run."""
    curves = {label: read_curve(d) for label, d in runs.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        raise ValueError(f"no probe points under {[str(d) for d in runs.values()]}: train with a drift probe "
                         "(train.drift in an experiment, or train(probe=DriftProbe(...)))")
    panels = _panels(curves)
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, m) in zip(axes.flat, panels):
        for label, points in curves.items():
            pts = [p["sets"][name] | {"step": p["step"]} for p in points if m in p["sets"].get(name, {})]
            steps = [p["step"] for p in pts]
            ax.plot(steps, [p[m] for p in pts], marker="o", label=label)
            ax.fill_between(steps, [p[f"{m}_ci95"][0] for p in pts], [p[f"{m}_ci95"][1] for p in pts], alpha=0.2)
        ax.set_xlabel("optimizer step")
        ax.set_title(f"{name}: {LABELS[m]}", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _cell(mean: float, ci: list | tuple, digits: int) -> str:
    return f"{mean:.{digits}f} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"


def _digits(m: str) -> int:
    return 4 if m in ("kl", "dnll") else 3


def forgetting_table(runs: dict[str, str | Path], reference: str | None = None) -> Table:
    """Each run's last probe point per prompt set, and its paired difference to ``reference``'s last point.

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
    header = ["Set", "Method", "Step"] + [LABELS[m] for m in MEASURES] + [f"{m} − {reference}" for m in PAIRED]
    rows = []
    for name in dict.fromkeys(n for p in last.values() for n in p["sets"]):
        ref = last[reference]["sets"].get(name, {})
        for label, point in last.items():
            if name not in point["sets"]:
                continue
            p = point["sets"][name]
            row = [name, label, str(point["step"])]
            row += [_cell(p[m], p[f"{m}_ci95"], _digits(m)) if m in p else "-" for m in MEASURES]
            for m in PAIRED:
                a, b = p.get("per_item", {}).get(m), ref.get("per_item", {}).get(m)
                ok = label != reference and a and b and len(a) == len(b) and None not in a and None not in b
                row.append(_cell(*_paired(a, b), _digits(m)) if ok else "-")
            rows.append(row)
    return Table("forgetting", f"Drift from the starting model at each run's last probe point, per prompt set "
                 f"(95 % bootstrap intervals over prompts; differences paired with {reference})", header, rows)


def _paired(a: list, b: list) -> tuple[float, tuple[float, float]]:
    mean, lo, hi = paired_bootstrap_ci(a, b)
    return mean, (lo, hi)
