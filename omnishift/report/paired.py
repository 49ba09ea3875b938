"""Methods compared on the questions they all answered: differences with paired bootstrap intervals.

Why: Table 2's intervals (about ±5 points on 300 questions) belong to one row each, but two methods
answer the *same* questions, so most of the per-question variance is shared and the difference has a
much tighter interval when questions are resampled together
(:func:`~omnishift.evaluate.scoring.paired_bootstrap_ci`). Two comparisons read the paper at this scale:

* every method against a reference (Full-FT): finding (d), do the mitigations keep text closer to the
  base (T2T) at a similar S2T?
* the text control against every speech method, T2T: the change in text ability that is due to the
  instructions being *spoken* (the same instructions, steps and learning rates given as text).

Which run is a text control is read from what trained it (``train/LABEL/config.yaml``: the method's
registry record or ``data.modality``), never from its label.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from omnishift.evaluate.scoring import paired_bootstrap_ci
from omnishift.tables import Table

MODES = ("t2t", "s2t")


def verdicts(items_jsonl: str | Path) -> dict[str, float]:
    """``{item id: 1.0 if correct else 0.0}`` of one evaluation's ``items.jsonl``."""
    out = {}
    for n, line in enumerate(Path(items_jsonl).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            r = json.loads(line)
            if "id" not in r or "correct" not in r:
                raise ValueError(f"{items_jsonl}:{n}: an item without 'id' or 'correct'; re-run the evaluation "
                                 "(`omnishift run CONFIG --redo evaluate`)")
            out[r["id"]] = float(r["correct"])
    return out


def paired_difference(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, float, int]:
    """Mean of ``a - b`` over the ids both answered, its 95 % paired interval, and that count."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two evaluations share no question id")
    mean, lo, hi = paired_bootstrap_ci([a[i] for i in common], [b[i] for i in common])
    return mean, lo, hi, len(common)


def trained_modality(train_dir: str | Path) -> str | None:
    """What a trained run's instructions were given as (``speech``/``text``; None: no config there)."""
    from omnishift.train.methods import METHODS

    path = Path(train_dir) / "config.yaml"
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    name = (cfg.get("method") or {}).get("name", "full")
    record = METHODS.get(name)
    return (record.modality if record is not None else None) or (cfg.get("data") or {}).get("modality", "speech")


def comparisons(modalities: dict[str, str], reference: str | None) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(a, b, modes)``: a − b to show. Every speech method against ``reference`` (both modes), and every
    text control against every speech method (T2T), in the order of ``modalities`` (``{label: modality}``)."""
    speech = [m for m, mod in modalities.items() if mod == "speech"]
    out = [(m, reference, MODES) for m in speech if reference in modalities and m != reference]
    out += [(t, m, ("t2t",)) for t, mod in modalities.items() if mod == "text" for m in speech]
    return out


def paired_table(cells: dict, pairs: list[tuple[str, str, tuple[str, ...]]], benches: list[str],
                 display=lambda s: s, bench_title=lambda s: s) -> Table:
    """One row per (pair, benchmark, mode) that both sides were evaluated on.

    Args:
        cells: ``{(row, bench, mode): summary}`` with each summary's ``folder`` (where its
            ``items.jsonl`` is), as :func:`omnishift.report.build.eval_cells` gives them.
    """
    rows = []
    for a, b, modes in pairs:
        for bench in benches:
            for mode in modes:
                ca, cb = cells.get((a, bench, mode)), cells.get((b, bench, mode))
                if ca is None or cb is None:
                    continue
                va, vb = (verdicts(Path(c["folder"]) / "items.jsonl") for c in (ca, cb))
                mean, lo, hi, n = paired_difference(va, vb)
                rows.append([f"{display(a)} − {display(b)}", bench_title(bench), mode.upper(),
                             f"{100 * ca['accuracy']:.1f}", f"{100 * cb['accuracy']:.1f}",
                             f"{100 * mean:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})", str(n)])
    return Table("paired_differences", "Accuracy differences on the same questions (points, 95 % paired "
                 "bootstrap intervals over questions)", ["Comparison", "Benchmark", "Mode", "A %", "B %",
                                                          "A − B", "Questions"], rows,
                 note="An interval that excludes 0 is a difference the questions can see. Text control − speech "
                      "method (T2T): the change in text ability due to the instructions being spoken.")
