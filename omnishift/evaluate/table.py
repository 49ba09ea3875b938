"""Side-by-side accuracy tables from ``summary.json`` files (paper Tables 2 and 3).

Every evaluation writes what it measured into its summary (``benchmark``, ``mode``, ``model``),
so a table is built from summaries alone, never by guessing from folder names. A row is one
model (``No-FT``, ``cascade``, ``LoRA``, ``r=8``, ...); a column is one benchmark in one mode;
a cell is ``accuracy (95% CI)`` in percent, ``-`` where that model was not evaluated.
:func:`accuracy_table` is the one builder of such tables: ``eval-table``, the rank ablation and
the report's Tables 2 and 3 all call it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from omnishift.paths import atomic_write_text
from omnishift.tables import Table, to_markdown

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
    """Gather cells: ``(row name, run path)`` pairs -> rows, columns and ``{(row, benchmark, mode): summary}``.

    Raises:
        ValueError: two summaries for the same row, benchmark and mode.
    """
    rows, cols, cells, where = [], [], {}, {}
    for name, run in runs:
        for f, s in read_summaries(run):
            col = (benchmark_key(s["benchmark"]), s["mode"])
            key = (name, *col)
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


def bench_title(name: str) -> str:
    """Column title of a benchmark key (``llama_questions`` -> ``LLaMA Q``; others as they are)."""
    return BENCHMARK_TITLES.get(name, name)


def accuracy_table(name: str, caption: str, cells: dict, rows: list[str], benches: list[str],
                   modes=("t2t", "s2t"), title: str = "Method", bold_best: bool = True,
                   cols: list[tuple[str, str]] | None = None) -> Table:
    """Accuracy with 95% CI per row, benchmark and mode: Tables 2 and 3 wherever they are written
    (``eval-table``, the rank ablation, the report).

    Args:
        name, caption: the table's file name and caption.
        cells: ``{(row, benchmark, mode): summary}`` with ``accuracy``, ``ci95`` and ``n``.
        rows, benches: display order; modes: column order within a benchmark.
        title: header of the row-name column.
        bold_best: bold the highest accuracy of each column (every tie) unless all its rows tie.
        cols: the ``(benchmark, mode)`` columns to show, even empty ones (default: those with a cell).

    Returns:
        The table; ``-`` where a row was not evaluated; the note gives n per column.
    """
    if cols is None:
        cols = [(b, m) for b in benches for m in modes if any((r, b, m) in cells for r in rows)]
    header = [title] + [f"{bench_title(b)} {m.upper()}" for b, m in cols]
    body, bold = [], set()
    for i, r in enumerate(rows):
        body.append([r] + [acc_cell(cells[(r, b, m)]) if (r, b, m) in cells else "-" for b, m in cols])
    for j, (b, m) in enumerate(cols, 1):
        vals = {i: cells[(r, b, m)]["accuracy"] for i, r in enumerate(rows) if (r, b, m) in cells}
        if bold_best and len(set(vals.values())) >= 2:  # a column where every row ties has no best
            best = max(vals.values())
            bold |= {(i, j) for i, v in vals.items() if v == best}
    ns = []
    for b, m in cols:
        n = sorted({cells[(r, b, m)]["n"] for r in rows if (r, b, m) in cells})
        ns.append(f"{bench_title(b)} {m.upper()} {'/'.join(map(str, n)) or '-'}")
    bold_note = "best per column in bold; " if bold_best else ""
    note = f"Accuracy % (bootstrap 95% CI); {bold_note}n = " + ", ".join(ns) + "." if cols else ""
    return Table(name, caption, header, body, bold, note)


def accuracy_csv(cells: dict, rows: list[str], cols: list[tuple[str, str]], title: str = "model") -> str:
    """The numbers behind an accuracy table: one CSV line per cell with ``accuracy``, ``ci_low``,
    ``ci_high`` (fractions), ``n``, and the WER where a cascade recorded one."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([title, "benchmark", "mode", "accuracy", "ci_low", "ci_high", "n", "wer"])
    for r in rows:
        for b, m in cols:
            s = cells.get((r, b, m))
            if s is not None:
                w.writerow([r, b, m, s["accuracy"], s["ci95"][0], s["ci95"][1], s["n"], s.get("wer", "")])
    return buf.getvalue()


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
    rows, cols, cells = collect(parse_runs(runs))
    t = accuracy_table(Path(out).stem, "Accuracy on spoken QA, text (T2T) and speech (S2T) questions", cells, rows,
                       [], title=title, bold_best=False, cols=cols)
    out = Path(out)
    csv_text = accuracy_csv(cells, rows, cols)
    return atomic_write_text(out, to_markdown(t)), atomic_write_text(out.with_suffix(".csv"), csv_text)
