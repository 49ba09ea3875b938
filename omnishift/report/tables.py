"""Report tables built from stage outputs (:class:`~omnishift.tables.Table`: Markdown, CSV and HTML alike).

Inputs are plain dicts as the stages write them (``deactivation/rows.json``, ``shift/metrics.json``,
training ``summary.json``), so every function is testable with hand-made values. The accuracy
tables (Tables 2 and 3) are :func:`omnishift.evaluate.table.accuracy_table`, the one function
``eval-table``, the rank ablation and the report all use.
"""

from __future__ import annotations

from omnishift.evaluate.table import accuracy_table, bench_title  # noqa: F401  (Tables 2 and 3 live there)
from omnishift.tables import Table, to_csv, to_markdown  # noqa: F401  (re-exported for the report)


def fmt_ppl(x: float) -> str:
    """Perplexity: 3 significant digits, scientific from 10⁴ (as in the paper's Table 1)."""
    return f"{x:.3g}" if x < 1e4 else f"{x:.2e}"


# ---- Table 1 ---------------------------------------------------------------------------------
def deactivation_table(doc: dict, name: str = "table1_deactivation", when: str = "") -> Table:
    """Table 1 from ``deactivation/rows.json`` (``{"fraction", "model", "rows": [{"input", "base",
    "top", "bottom", "random", "zeroed"}]}``); ``name``/``when`` tell a Stage-1 model's table apart."""
    p = f"{doc['fraction'] * 100:g}%"
    rows = [[doc.get("model", ""), r["input"], *(fmt_ppl(r[k]) for k in ("base", "top", "bottom", "random"))]
            for r in doc["rows"]]
    zeroed = doc["rows"][0]["zeroed"]["top"] if doc["rows"] else 0
    return Table(name, f"Table 1. Held-out perplexity after deactivating {p} of the parameters "
                 f"by importance (top / bottom / random){', ' + when if when else ''}",
                 ["Model", "Input", "Base", f"Top {p}", f"Bottom {p}", f"Random {p}"], rows,
                 note=f"{zeroed:,} entries zeroed per strategy ({doc.get('scope', 'layers')} scope); perplexity of "
                      "the response tokens given a text or a spoken prompt.")


# ---- analysis tables -------------------------------------------------------------------------
def shift_table(metrics: dict, display=lambda s: s) -> Table:
    """Distribution shift of textual importance vs the base model, per method (``shift/metrics.json``)."""
    rows = []
    for label, m in metrics.items():
        ta, tb = m["thirds"]["a"]["last"], m["thirds"]["b"]["last"]
        rows.append([display(label), f"{m['js_divergence_bits']:.4f}", f"{m['spearman_layers']:.3f}",
                     f"{m['peak_layer']['a']} → {m['peak_layer']['b']}", f"{m['total_mass_ratio']:.3g}",
                     f"{100 * ta:.1f} → {100 * tb:.1f}"])
    return Table("shift_metrics", "Layer-wise textual importance: shift from the base model after training",
                 ["Method", "JS divergence (bits)", "Spearman ρ (layers)", "Peak layer (base → method)",
                  "Importance mass ratio", "Last-third share % (base → method)"], rows,
                 note="JS divergence 0 = same layer distribution; mass ratio = total textual importance after / before.")


def training_table(summaries: dict, display=lambda s: s) -> Table:
    """One row per trained method from the trainer's ``summary.json``."""
    rows = [[display(k), str(s["steps"]), "-" if s.get("final_loss") is None else f"{s['final_loss']:.4f}",
             f"{s['trainable_parameters']:,}", f"{s.get('fixed_entries', 0):,}"] for k, s in summaries.items()]
    return Table("training", "Stage-1 training runs", ["Method", "Steps", "Final loss", "Trainable parameters",
                                                       "Entries held fixed"], rows)


def clustering_table(scores: dict, caption: str, name: str) -> Table:
    """``{row label: {matrix name: score or {"score": x}}}`` -> one column per label, one row per matrix."""
    labels = list(scores)
    names = []
    for per in scores.values():
        names += [n for n in per if n not in names]

    def val(label, n):
        v = scores[label].get(n)
        v = v["score"] if isinstance(v, dict) else v
        return "-" if v is None else f"×{v:.2f}"

    rows = [[n] + [val(lab, n) for lab in labels] for n in names]
    return Table(name, caption, ["Matrix"] + labels, rows,
                 note="Rank-clustering score: share of the top-5% cells on the busiest 5% of rows and columns, "
                      "relative to a random placement (×1 = no clustering).")


def front_table(cells: dict, rows: list[str], benches: list[str], tolerance: float = 0.01, no_ft: str = "no_ft",
                cascade: str = "cascade") -> tuple[Table, list[str]]:
    """The mitigation target per method: T2T within ``tolerance`` of No-FT while S2T reaches the cascade.

    Why a table of its own: Table 2 shows accuracies, but the question a speech-LLM builder asks
    of a mitigation is whether it keeps the text ability *and* learns to listen, and how far each
    method is from doing both; the Pareto front says which methods no other one beats on both.

    Args:
        cells: ``{(row, benchmark, mode): summary}`` (Table 2's cells), the baselines' rows included.
        rows: method rows to judge, in display order.
        benches: benchmarks (columns).
        tolerance: allowed T2T drop below No-FT, as a fraction (0.01 = 1 point).
        no_ft, cascade: the row names of the two baselines in ``cells``.

    Returns:
        ``(table, paragraphs)``: per method and benchmark ΔT2T = T2T − No-FT and ΔS2T = S2T −
        cascade in points, whether the target is met and whether the method is on the front
        (no other method at least as good on both with one strictly better); the paragraphs name
        the best point per benchmark (target met with the highest S2T, else the one with the
        smallest shortfall) and how far it is.
    """
    header, body, notes = ["Method"], [], []
    usable = [b for b in benches if (no_ft, b, "t2t") in cells and (cascade, b, "s2t") in cells]
    for b in usable:
        header += [f"{bench_title(b)} ΔT2T", f"{bench_title(b)} ΔS2T", f"{bench_title(b)} target", f"{bench_title(b)} front"]
    pts = {b: {r: (cells[(r, b, "t2t")]["accuracy"], cells[(r, b, "s2t")]["accuracy"]) for r in rows
               if (r, b, "t2t") in cells and (r, b, "s2t") in cells} for b in usable}
    for r in rows:
        line = [r]
        for b in usable:
            if r not in pts[b]:
                line += ["-"] * 4
                continue
            base, casc = cells[(no_ft, b, "t2t")]["accuracy"], cells[(cascade, b, "s2t")]["accuracy"]
            t, s = pts[b][r]
            dominated = any(t2 >= t and s2 >= s and (t2, s2) != (t, s) for o, (t2, s2) in pts[b].items() if o != r)
            line += [f"{100 * (t - base):+.1f}", f"{100 * (s - casc):+.1f}",
                     "yes" if t >= base - tolerance - 1e-12 and s >= casc else "no", "no" if dominated else "yes"]
        body.append(line)
    for b in usable:
        if not pts[b]:
            continue
        base, casc = cells[(no_ft, b, "t2t")]["accuracy"], cells[(cascade, b, "s2t")]["accuracy"]
        # shortfall: points missing on T2T (beyond the tolerance) plus points missing on S2T
        short = {r: max(0.0, base - tolerance - t) + max(0.0, casc - s) for r, (t, s) in pts[b].items()}
        best = min(pts[b], key=lambda r: (short[r], -pts[b][r][1], -pts[b][r][0]))
        t, s = pts[b][best]
        if short[best] <= 1e-12:
            notes.append(f"{bench_title(b)}: target met by {best} (T2T {100 * t:.1f} vs No-FT {100 * base:.1f}, "
                         f"S2T {100 * s:.1f} vs cascade {100 * casc:.1f}).")
        else:
            notes.append(f"{bench_title(b)}: target not met; closest is {best} with T2T {100 * t:.1f} "
                         f"(No-FT {100 * base:.1f}) and S2T {100 * s:.1f} (cascade {100 * casc:.1f}): "
                         f"{100 * short[best]:.1f} points short in all.")
    table = Table("front", f"The mitigation target: T2T within {100 * tolerance:g} point of No-FT and S2T at least "
                  "the cascade's", header, body,
                  note="Δ in accuracy points against No-FT (T2T) and the cascade (S2T); front = no other method "
                       "is at least as good on both with one strictly better.")
    return table, notes
