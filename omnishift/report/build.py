"""``runs/NAME/report.html`` + ``report.md`` + ``report/{tables,figures}/`` from a run's stage outputs.

Reads only what the stages wrote (``experiment.yaml``, ``STAGE/DONE`` markers, score folders,
summaries, PNGs), so ``omnishift report runs/NAME`` rebuilds it at any time, also for a run that
is still going: what is missing is named in its section, never silently dropped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from omnishift.evaluate.ablation import rank_table
from omnishift.paths import atomic_write_bytes, atomic_write_text
from omnishift.report.html import Figure, Section, render_html, render_markdown
from omnishift.report.names import display
from omnishift.report.paired import comparisons, paired_table, trained_modality
from omnishift.report.tables import (
    Table, accuracy_table, bench_title, clustering_table, deactivation_table, front_table, shift_table, to_csv,
    to_markdown, training_table,
)
from omnishift.runs import read_marker



@dataclass(frozen=True)
class Study:
    """What every section reads besides the run folder: the trained methods in the experiment's order, and
    the method the others are compared with (``report.reference``)."""

    methods: list
    reference: str = "full"


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _marker(run: Path, stage: str) -> dict | None:
    return read_marker(run, stage)


def _missing(run: Path, stage: str, what: str) -> str:
    m = _marker(run, stage)
    if m and m.get("skipped"):
        return f"{what}: stage '{stage}' was skipped ({m['skipped']})."
    if m:
        return f"{what}: stage '{stage}' finished without producing it."
    return f"{what}: not available yet (stage '{stage}' has not finished)."


def _display(label: str) -> str:
    return display(label)


def eval_cells(root: Path) -> tuple[dict, list[str], list[str]]:
    """The evaluate stage's summaries under ``root`` -> ``({(row, bench, mode): s}, rows, benches)``,
    keyed by what each summary recorded (``row``, ``benchmark``, ``mode``), never by folder names."""
    cells, rows, benches = {}, [], []
    for f in sorted(root.glob("*/*/*/summary.json")):
        s = json.loads(f.read_text(encoding="utf-8"))
        if "accuracy" not in s:
            continue
        missing = [k for k in ("row", "benchmark", "mode") if k not in s]
        if missing:
            raise ValueError(f"{f}: no {missing} recorded (written by an older omnishift); re-run "
                             "`omnishift run CONFIG --redo evaluate` to refresh the summaries")
        row, bench, mode = s["row"], s["benchmark"], s["mode"]
        cells[(row, bench, mode)] = {**s, "folder": str(f.parent)}
        rows += [row] if row not in rows else []
        benches += [bench] if bench not in benches else []
    return cells, rows, benches


def distinct_answers(items_jsonl: Path) -> tuple[int, int]:
    """``(distinct answers, answers)`` in an evaluation's ``items.jsonl``.

    A speech LLM whose adaptor carries no usable content answers every spoken question with the
    same text; accuracy alone cannot tell that from a model that listens and is wrong.
    """
    outs = [json.loads(line)["output"] for line in items_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(set(outs)), len(outs)


def _order(found: list[str], wanted: list[str]) -> list[str]:
    return [r for r in wanted if r in found] + [r for r in found if r not in wanted]


def _section_overview(run: Path, exp: dict) -> Section:
    rows = []
    listed = _json(run / "stages.json") or {}  # the runner's stage list: name -> what it produces
    for stage in exp.get("stages") or listed:
        m = _marker(run, stage)
        status = "skipped: " + m["skipped"] if m and m.get("skipped") else ("done" if m else "not finished")
        if stage == "report" and not m:
            status = "this page (built after the stages above)"
        rows.append([stage, listed.get(stage, (m or {}).get("produces", "")), status, f"{m['seconds']:.0f}" if m else "-",
                     m.get("finished", "-") if m else "-"])
    model = exp.get("model", {})
    methods = list((exp.get("train") or {}).get("methods") or {})
    benches = (exp.get("evaluate") or {}).get("benchmarks") or {}
    data = _json(run / "data" / "summary.json") or {}
    paras = [f"Base speech LLM: {Path(str(model.get('llm'))).name} + {Path(str(model.get('encoder'))).name} "
             f"(adaptor k = {model.get('k')}, frame policy {model.get('frame_policy')}).",
             "Methods: " + (", ".join(_display(m) for m in methods) or "none") + ". Benchmarks: "
             + (", ".join(f"{bench_title(b)} ({data.get('bench:' + b, {}).get('items', '?')} questions, "
                          f"source {v['source']})" for b, v in benches.items()) or "none") + "."]
    if "train" in data:
        paras.append(f"Training set: {data['train']['items']} spoken instructions from {data['train']['source']}.")
    return Section("overview", "Run overview", paras, [Table(
        "stages", "Pipeline stages", ["Stage", "Produces", "Status", "Seconds", "Finished"], rows)])


def _importance(run: Path, study: Study) -> Section:
    """Sec. 2: Table 1 (deactivation) and Fig. 1 (rank clustering) of the base model."""
    s = Section("importance", "Parameter importance of the base model (paper Sec. 2)")
    doc = _json(run / "deactivation" / "rows.json")
    if doc:
        s.tables.append(deactivation_table(doc))
    else:
        s.paragraphs.append("Table 1 (deactivation) — " + _missing(run, "deactivation", "Table 1"))
    clus = _json(run / "importance" / "fig1_rank_clustering.json")
    if clus:
        s.tables.append(clustering_table(clus, "Rank clustering of the top-5% importance region (Fig. 1)",
                                         "fig1_rank_clustering"))
        s.figures.append(Figure(run / "importance" / "fig1_rank_clustering.png",
                                "Fig. 1. Top-5% importance region per module, text vs speech input "
                                "(share of each 3×3 vicinity in the region)."))
    else:
        s.paragraphs.append("Fig. 1 (rank clustering) — " + _missing(run, "importance", "Fig. 1"))
    return s


def _alignment(run: Path, study: Study) -> Section | None:
    """The recipe that aligned the adaptor: its sets, phases and how the model reads speech."""
    al = _json(run / "align" / "recipe.json")
    if not al:
        return None
    s = Section("align", "Adaptor alignment before Stage 1 (LLM frozen)")
    parts = []
    for p in al["parts"]:
        if "set" in p:
            parts.append(f"set {p['set']}: {p['clips']} clips")
        else:
            dev = p["summary"].get("dev_wer")
            parts.append(f"phase {p['phase']}: {p['steps']} steps" + (f", held-out greedy-CTC WER {100 * dev:.1f}%"
                                                                       if dev is not None else ""))
    name = Path(al["recipe"].split(" (with overrides")[0]).stem  # the recipe, not the run's own overrides
    s.paragraphs.append(f"Recipe {name}: " + "; ".join(parts) + f". The aligned model reads speech as "
                        f"{al['speech_input']} (CTC decoding {al['decoding'] or 'greedy'}); bfloat16: "
                        f"{al['precision']['bf16']}.")
    return s


def _training(run: Path, study: Study) -> Section:
    """Stage-1 summaries per method and the loss curves."""
    s = Section("training", "Stage-1 training (paper Sec. 3.1)")
    summ = {m: _json(run / "train" / m / "summary.json") for m in study.methods}
    summ = {m: v for m, v in summ.items() if v}
    if summ:
        s.tables.append(training_table(summ, _display))
    if (run / "train" / "loss.png").is_file():
        s.figures.append(Figure(run / "train" / "loss.png", "Training loss per optimizer step (5-step moving average)."))
    curves = {_display(m): run / "train" / m for m in study.methods if (run / "train" / m / "probes").is_dir()}
    if curves:
        from omnishift.report.forgetting import forgetting_table, plot_forgetting_curves

        ref = _display(study.reference) if _display(study.reference) in curves else None  # else: the first curve
        s.tables.append(forgetting_table(curves, ref))
        png = plot_forgetting_curves(curves, run / "report" / "figures" / "forgetting.png")
        s.figures.append(Figure(png, "Forgetting curves: drift from the starting model along Stage 1, on held-out "
                                     "instructions and on benchmark questions asked as text (T2T), mean and 95 % "
                                     "interval over prompts."))
    if not summ:
        s.paragraphs.append("Training loss curves — " + _missing(run, "train", "trained models"))
    return s


def _shift(run: Path, study: Study) -> Section:
    """Fig. 2-3: how textual importance moved per layer."""
    s = Section("shift", "Distribution shift of textual importance (Fig. 2-3)")
    metrics = _json(run / "shift" / "metrics.json")
    if metrics:
        s.tables.append(shift_table(metrics, _display))
    for name, cap in (("fig2_layers_full", "Fig. 2. Layer-wise textual importance before and after full fine-tuning."),
                      ("fig3_layers_methods", "Fig. 3. Layer-wise textual importance before and after each method.")):
        if (run / "shift" / f"{name}.png").is_file():
            s.figures.append(Figure(run / "shift" / f"{name}.png", cap))
        elif name == "fig3_layers_methods" or metrics:
            s.paragraphs.append(f"{cap.split('.')[0]}. — " + (_missing(run, "shift", "this figure") if not metrics
                                                               else "no full fine-tuning among the methods."))
    for label in study.methods:  # Table 1 on the Stage-1 models that deactivation.after_training names
        doc = _json(run / "deactivation_after" / label / "rows.json")
        if doc:
            s.tables.append(deactivation_table(doc, f"table1_deactivation_{label}", "after Stage 1, each model "
                                               "zeroed by its own textual importance"))
    return s


def _change(run: Path, study: Study) -> Section:
    """Fig. 4: where the weights changed."""
    s = Section("change", "Parameter changes (Fig. 4)")
    ch = _json(run / "change" / "clustering.json")
    if ch:
        s.tables.append(clustering_table({k: v for k, v in ch.items()}, "Rank clustering of the top-5% |ΔW| cells",
                                         "fig4_change_clustering"))
        s.figures.append(Figure(run / "change" / "fig4_change.png",
                                "Fig. 4. |ΔW| per matrix of one decoder layer, normalised per matrix."))
    else:
        s.paragraphs.append("Fig. 4 — " + _missing(run, "change", "parameter-change heatmaps"))
    return s


def _heard(run: Path, order: list, benches: list) -> list[Table]:
    """What the adaptor hears (CTC WER per model) and whether the model listens (listening gain)."""
    out = []
    heard = {(r, b): _json(run / "evaluate" / r / b / "ctc" / "summary.json") for r in order for b in benches}
    heard_rows = [r for r in order if any(heard[(r, b)] for b in benches)]
    if heard_rows:
        beam = any((heard[(r, b)] or {}).get("ctc_decoding") for r in heard_rows for b in benches)
        how = "CTC transcript (beam search with the base LLM as language model)" if beam else "greedy CTC transcript"
        out.append(Table("adaptor_ctc_wer", f"What the adaptor hears: word error rate of its {how} "
                         "of the spoken questions", ["Model", *[bench_title(b) for b in benches]],
                         [[_display(r), *[f"{100 * heard[(r, b)]['wer']:.1f}%" if heard[(r, b)] else "-"
                                          for b in benches]] for r in heard_rows]))
    listen = {r: _json(run / "evaluate" / r / "listening" / "summary.json") for r in order}
    listen = {r: v for r, v in listen.items() if v}
    if listen:
        out.append(Table("listening", "Does the model listen? Response perplexity on held-out items "
                         "from text, from the item's own clip and from another item's clip; gain = "
                         "ln(PPL other / PPL own) in nats per token (0: the speech carries nothing)",
                         ["Model", "items", "PPL text", "PPL own clip", "PPL other clip", "gain (nats)"],
                         [[_display(r), v["n"], f"{v['ppl_text']:.2f}", f"{v['ppl_speech']:.2f}",
                           f"{v['ppl_speech_mismatched']:.2f}", f"{v['gain_nats']:.3f}"] for r, v in listen.items()]))
    return out


def _tradeoff(run: Path, cells: dict, order: list, benches: list) -> Figure:
    """The T2T-S2T front with 95 % CIs."""
    from omnishift.report.figures import plot_tradeoff

    pts = {}
    for b in benches:
        ci = lambda k: (cells[k]["accuracy"], *cells[k]["ci95"]) if k in cells else None  # noqa: E731
        pts[bench_title(b)] = [{"label": _display(r), "t2t": ci((r, b, "t2t")), "s2t": ci((r, b, "s2t"))}
                               for r in order if ci((r, b, "t2t")) or ci((r, b, "s2t"))]
    png = plot_tradeoff(pts, run / "report" / "figures" / "tradeoff_t2t_s2t.png")
    return Figure(png, "T2T vs S2T accuracy per method with 95% CI error bars (the trade-off front); "
                       "dashed: No-FT T2T, dotted: cascade S2T.")


def _qa(run: Path, study: Study) -> Section:
    """Table 2 and everything that says how to read it."""
    s = Section("qa", "Spoken QA: text (T2T) and speech (S2T) accuracy (Table 2)")
    cells, rows, benches = eval_cells(run / "evaluate")
    if not cells:
        s.paragraphs.append("Table 2 — " + _missing(run, "evaluate", "QA accuracy"))
        return s
    order = _order(rows, ["no_ft", "cascade", "aligned", *study.methods])
    named = {(_display(r), b, m): v for (r, b, m), v in cells.items()}
    s.tables.append(accuracy_table("table2_qa", "Table 2. Accuracy on spoken QA benchmarks, text (T2T) and speech "
                                   "(S2T) questions", named, [_display(r) for r in order], benches))
    wer = [f"{bench_title(b)}: {100 * cells[('cascade', b, 's2t')]['wer']:.1f}%" for b in benches
           if ("cascade", b, "s2t") in cells and cells[("cascade", b, "s2t")].get("wer") is not None]
    if wer:
        s.paragraphs.append("Cascade ASR word error rate on the spoken questions: " + ", ".join(wer) + ".")
    s.tables += _heard(run, order, benches)
    s.paragraphs += scale_notes(run, order, cells, study.methods)
    distinct = [f"{_display(r)} {bench_title(b)} {d}/{n}" for r in order for b in benches
                if (r, b, "s2t") in cells and (f := run / "evaluate" / r / b / "s2t" / "items.jsonl").is_file()
                for d, n in [distinct_answers(f)]]
    if distinct:
        s.paragraphs.append("Distinct S2T answers (a model that ignores the speech gives one answer to every "
                            "question): " + ", ".join(distinct) + ".")
    s.figures.append(_tradeoff(run, cells, order, benches))
    front, notes = front_table(named, [_display(r) for r in order if r not in ("no_ft", "cascade")],
                               benches, no_ft=_display("no_ft"), cascade=_display("cascade"))
    if front.rows and len(front.header) > 1:
        s.tables.append(front)
        s.paragraphs += notes
    modalities = {m: mod for m in study.methods if (mod := trained_modality(run / "train" / m)) is not None}
    paired = paired_table(cells, comparisons(modalities, study.reference), benches, _display, bench_title)
    if paired.rows:
        s.tables.append(paired)
    return s


def _ablation(run: Path, study: Study) -> Section:
    """Table 3: LoRA at several ranks."""
    s = Section("ablation", "LoRA rank ablation (Table 3)")
    skipped = (_marker(run, "ablation") or {}).get("skipped")
    t3 = None if skipped or not (run / "ablation").is_dir() else rank_table(run / "ablation")[0]
    if t3 is not None and t3.rows:
        s.tables.append(t3)
    else:
        s.paragraphs.append("Table 3 — " + _missing(run, "ablation", "rank ablation"))
    return s


#: The report's sections after the overview, in order: ``(run folder, Study) -> Section`` (None: absent).
SECTIONS = (_importance, _alignment, _training, _shift, _change, _qa, _ablation)


def build_sections(run: Path, exp: dict) -> tuple[list[Section], list[Table]]:
    """Every section of the report, and the tables that get CSV/Markdown files."""
    study = Study(list((exp.get("train") or {}).get("methods") or {}), (exp.get("report") or {}).get("reference", "full"))
    sections = [_section_overview(run, exp)] + [s for make in SECTIONS if (s := make(run, study)) is not None]
    return sections, [t for sec in sections for t in sec.tables]


def build_report(run_dir: str | Path, title: str = "") -> Path:
    """Write ``report.html`` (self-contained), ``report.md``, ``report/tables/*.{csv,md}`` and
    ``report/figures/*.png`` for the run in ``run_dir``; returns the HTML path.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``experiment.yaml``).
    """
    run = Path(run_dir)
    exp_file = run / "experiment.yaml"
    if not exp_file.is_file():
        raise FileNotFoundError(f"{run} is not an `omnishift run` folder (no experiment.yaml)")
    exp = yaml.safe_load(exp_file.read_text(encoding="utf-8")) or {}
    title = title or (exp.get("report") or {}).get("title") or f"omnishift report: {exp.get('name', run.name)}"
    sections, tables = build_sections(run, exp)
    fig_dir, tab_dir = run / "report" / "figures", run / "report" / "tables"
    for sec in sections:  # figures beside the report (the Markdown links them)
        for f in sec.figures:
            if f.path.parent != fig_dir:
                dest = fig_dir / f.path.name
                atomic_write_bytes(dest, f.path.read_bytes())
                f.path = dest
    if tab_dir.is_dir():
        shutil.rmtree(tab_dir)
    for t in tables:
        atomic_write_text(tab_dir / f"{t.name}.csv", to_csv(t))
        atomic_write_text(tab_dir / f"{t.name}.md", to_markdown(t))
    intro = [f"Run folder: {run.resolve()}. Built from the stage outputs; rebuild with "
             f"`omnishift report {run}`."]
    atomic_write_text(run / "report.md", render_markdown(title, sections, run, intro))
    return atomic_write_text(run / "report.html", render_html(title, sections, intro))


def scale_notes(run: Path, rows: list[str], cells: dict, methods: list[str]) -> list[str]:
    """At what scale each speech row was trained, and, where S2T is near zero, why and what fixes it:
    so a toy run (the demo) is never read as the method's result."""
    from omnishift.align.recipe import RECIPES, load_recipe

    al, notes = _json(run / "align" / "recipe.json"), []
    if al:
        steps = sum(p.get("steps", 0) for p in al["parts"] if "phase" in p)
        clips = sum(p.get("clips") or 0 for p in al["parts"] if "set" in p)
        notes.append(f"Scale: the adaptor was aligned for {steps} steps on {clips} synthetic clips.")
    trained = {m: _json(run / "train" / m / "summary.json") for m in methods}
    told = [f"{_display(m)} {v['steps']} steps" for m, v in trained.items() if v and "steps" in v]
    if told:
        notes.append("Stage 1: " + ", ".join(told) + ".")
    low = sorted({_display(r) for (r, _, m), v in cells.items() if m == "s2t" and r != "cascade" and v["accuracy"] < 0.05})
    if low:
        shipped = "; ".join(f"`omnishift align {n}` ({load_recipe(n)[0].measured})" for n in RECIPES)
        notes.append(f"S2T is near zero for {', '.join(low)}: at this scale the adaptor does not carry the question yet "
                     f"(aligned for {'seconds' if al and steps < 500 else 'too short' if al else 'not at all'}). "
                     f"The recipe that makes it listen: {shipped}.")
    return notes
