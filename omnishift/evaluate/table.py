"""Side-by-side accuracy tables from ``summary.json`` files (paper Tables 2 and 3).

Every evaluation writes what it measured into its summary (``benchmark``, ``mode``, ``model``),
so a table is built from summaries alone, never by guessing from folder names. A row is one
model (``No-FT``, ``cascade``, ``LoRA``, ``r=8``, ...); a column is one benchmark in one mode;
a cell is ``accuracy (95% CI)`` in percent, ``-`` where that model was not evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from omnishift.paths import atomic_write_text

# Column order and headers of the paper's Table 2; other benchmarks follow in the order seen.
BENCHMARK_TITLES = {"llama_questions": "LLaMA Q", "web_questions": "Web Q"}
MODES = ("t2t", "s2t")


def benchmark_key(spec: str) -> str:
    """Table key of a benchmark spec: ``web_questions:test`` -> ``web_questions``; a manifest -> its stem."""
    if spec in ("web_questions", "web_questions:test"):
        return "web_questions"
    if spec.endswith(".jsonl"):
        return Path(spec).stem
    return spec


def read_summaries(run: str | Path) -> list[tuple[Path, dict]]:
    """Every ``summary.json`` at or under ``run`` (a file or a folder), checked for table keys.

    Raises:
        FileNotFoundError: nothing found.
        ValueError: a summary without ``benchmark`` or ``mode`` (written before they were recorded).
    """
    run = Path(run)
    files = [run] if run.is_file() else sorted(run.rglob("summary.json"))
    out = []
    for f in files:
        s = json.loads(f.read_text(encoding="utf-8"))
        if "accuracy" not in s:
            continue  # e.g. a training run's summary.json
        missing = [k for k in ("benchmark", "mode", "ci95") if k not in s]
        if missing:
            raise ValueError(f"{f}: no {missing} recorded; re-run `omnishift eval` on the same --out to refresh "
                             "the summary, or add the keys by hand")
        out.append((f, s))
    if not out:
        raise FileNotFoundError(f"no evaluation summary.json at or under {run}")
    return out


def collect(runs: list[tuple[str, str | Path]]) -> tuple[list[str], list[tuple[str, str]], dict]:
    """Gather cells: ``(row name, run path)`` pairs -> rows, columns and ``{(row, column): summary}``.

    Raises:
        ValueError: two summaries for the same row, benchmark and mode.
    """
    rows, cols, cells, where = [], [], {}, {}
    for name, run in runs:
        for f, s in read_summaries(run):
            col = (benchmark_key(s["benchmark"]), s["mode"])
            key = (name, col)
            if key in cells:
                raise ValueError(f"row {name!r} has two {col[0]} {col[1]} results: {where[key]} and {f}; "
                                 "give each run its own row name (NAME=DIR)")
            cells[key], where[key] = s, f
            rows += [name] if name not in rows else []
            cols += [col] if col not in cols else []
    order = {b: i for i, b in enumerate(BENCHMARK_TITLES)}
    benches = sorted({b for b, _ in cols}, key=lambda b: (order.get(b, len(order)), [c[0] for c in cols].index(b)))
    cols = [(b, m) for b in benches for m in MODES if (b, m) in cols or b in BENCHMARK_TITLES]
    return rows, cols, cells


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal (``0.3067`` -> ``"30.7"``)."""
    return f"{100 * x:.1f}"


def acc_cell(summary: dict) -> str:
    """One table cell: ``accuracy (CI low–high)`` in percent, as in Tables 2 and 3."""
    lo, hi = summary["ci95"]
    return f"{pct(summary['accuracy'])} ({pct(lo)}–{pct(hi)})"


def render(rows, cols, cells, title: str = "Model") -> tuple[str, str]:
    """Markdown and CSV text of the table.

    Returns:
        ``(markdown, csv)``; the CSV has ``accuracy``, ``ci_low``, ``ci_high`` (fractions) and ``n``
        per cell, and the WER where a cascade recorded one.
    """
    head = [title] + [f"{BENCHMARK_TITLES.get(b, b)} {m.upper()}" for b, m in cols]
    md = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        line = [r]
        for c in cols:
            s = cells.get((r, c))
            line.append("-" if s is None else acc_cell(s))
        md.append("| " + " | ".join(line) + " |")
    ns = {c: sorted({cells[(r, c)]["n"] for r in rows if (r, c) in cells}) for c in cols}
    md.append("")
    md.append("Accuracy % (bootstrap 95% CI); n = " + ", ".join(
        f"{BENCHMARK_TITLES.get(b, b)} {m.upper()}: {'/'.join(map(str, ns[(b, m)])) or '-'}" for b, m in cols) + ".")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "benchmark", "mode", "accuracy", "ci_low", "ci_high", "n", "wer"])
    for r in rows:
        for b, m in cols:
            s = cells.get((r, (b, m)))
            if s is not None:
                w.writerow([r, b, m, s["accuracy"], s["ci95"][0], s["ci95"][1], s["n"], s.get("wer", "")])
    return "\n".join(md) + "\n", buf.getvalue()


def parse_runs(specs: list[str]) -> list[tuple[str, str]]:
    """``NAME=DIR`` or ``DIR`` (row named by the summaries' ``model``, else the folder name)."""
    from omnishift.schema import parse_labelled

    def model_name(path: str) -> str:
        return read_summaries(path)[0][1].get("model") or Path(path).name

    return list(parse_labelled(specs, "RUN_DIR", default_label=model_name).items())


def write_table(runs: list[str], out: str | Path, title: str = "Model") -> tuple[Path, Path]:
    """Build the table from run folders and write ``out`` (Markdown) and ``out`` with ``.csv``.

    Args:
        runs: ``NAME=DIR`` or ``DIR`` per row (see :func:`parse_runs`).
        out: Markdown path, e.g. ``table2.md``.
        title: header of the row-name column.

    Returns:
        ``(markdown path, csv path)``.
    """
    md, text = render(*collect(parse_runs(runs)), title=title)
    out = Path(out)
    return atomic_write_text(out, md), atomic_write_text(out.with_suffix(".csv"), text)
