"""The ``evaluate`` stage (Table 2) and the rank ablation (Table 3).

Every unit (a model x benchmark x mode, what a CTC head hears, a listening check) is keyed by the
content of the model folder it evaluates, of the benchmark manifest and its audio, and by the prompt
and generation settings (:meth:`Context.reuse`), so a retrained model, an edited benchmark or a new
prompt can never be served the answers of another.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.paths import atomic_write_text
from omnishift.claims import claimed
from omnishift.fingerprint import same_weights
from omnishift.pipeline.context import Context
from omnishift.pipeline.importance_stages import load_trained
from omnishift.pipeline.train_stage import _config_dict, train_overrides
from omnishift.report.names import display


def evaluate_inputs(ctx: Context) -> dict:
    """What evaluation reads from outside the run: the cascade's ASR model, by content."""
    from omnishift.models.defaults import whisper_ct2_dir
    from omnishift.reuse import content_sha256

    ev = ctx.cfg.evaluate
    if "cascade" not in ev.baselines or "s2t" not in ev.modes:
        return {}
    return {"evaluate.asr_model": content_sha256(ctx.cfg.resolve(ev.asr_model) if ev.asr_model else whisper_ct2_dir())}


def copy_unit(src: Path, dst: Path, meta: dict) -> None:
    """Give ``dst`` the answers and summary of the finished unit ``src`` (``meta`` says why)."""
    summary = json.loads((src / "summary.json").read_text(encoding="utf-8"))
    dst.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst / "items.jsonl", (src / "items.jsonl").read_text(encoding="utf-8"))
    summary.update(meta, seconds=0.0, questions_per_s=None)
    atomic_write_text(dst / "summary.json", json.dumps(summary, indent=2) + "\n")


def _say_wait(ctx: Context, unit: str, holder: dict | None) -> None:
    if ctx.progress.stream is not None:
        print(f"evaluate: waiting for {unit}, which process {(holder or {}).get('pid')} on "
              f"{(holder or {}).get('host')} is evaluating", file=ctx.progress.stream, flush=True)


def _summary_done(folder: Path) -> bool:
    """A unit whose fingerprint matched is complete once its summary is written (its last act)."""
    f = folder / "summary.json"
    return f.is_file() and "accuracy" in json.loads(f.read_text(encoding="utf-8"))


class _Rows:
    """The rows of Table 2, their model folders (None: the base model) and one loaded model at a time."""

    def __init__(self, ctx: Context):
        ev, self.ctx, self.loaded = ctx.cfg.evaluate, ctx, {}
        self.rows = []  # (row key, model source, modes)
        if "no_ft" in ev.baselines and "t2t" in ev.modes:
            self.rows.append(("no_ft", "base", ["t2t"]))
        if "cascade" in ev.baselines and "s2t" in ev.modes:
            self.rows.append(("cascade", "cascade", ["s2t"]))
        if ctx.aligned() is not None:
            self.rows.append(("aligned", "trained", list(ev.modes)))
        self.rows += [(label, "trained", list(ev.modes)) for label in ctx.cfg.train.methods]
        self._fps, self.asr = {}, None

    def folder(self, row: str) -> Path | None:
        if row in ("no_ft", "cascade"):
            return None
        return self.ctx.aligned() if row == "aligned" else self.ctx.final(row)

    def fp(self, row: str) -> dict:
        if row not in self._fps:
            self._fps[row] = self.ctx.model_fp(self.folder(row))
        return self._fps[row]

    def model(self, row: str):
        if self.folder(row) is None:
            return self.ctx.base_model()
        if row not in self.loaded:
            self.loaded.clear()  # one trained model in memory at a time
            self.loaded[row] = load_trained(self.folder(row))
            fc = self.ctx.cfg.evaluate.feature_cache
            if fc:  # beam-decoded CTC input: one decoding per clip for every row
                self.loaded[row].use_token_cache(Path(self.ctx.cfg.resolve(fc)) / "ctc_tokens")
        return self.loaded[row]


def _unit_inputs(ctx: Context, rows: _Rows, row: str, src: str, items_fp: str, mode: str) -> dict:
    ev = ctx.cfg.evaluate
    d = {"model": rows.fp(row), "items": items_fp, "mode": mode, "prompt": ev.prompt,
         "max_new_tokens": ev.max_new_tokens}
    if src == "cascade":
        d["asr"] = evaluate_inputs(ctx)
    return d


def _copy_from_no_ft(ctx: Context, rows: _Rows, row: str, folder: Path, base_unit: Path, meta: dict, base_inputs: dict,
                     unchanged: dict) -> bool:
    """A T2T unit of a model whose LLM is the base one bit for bit: No-FT's answers, once checked."""
    from omnishift.fingerprint import fingerprint
    from omnishift.reuse import read_record

    if not _summary_done(base_unit) or (read_record(base_unit) or {}).get("fingerprint") != fingerprint(base_inputs):
        return False  # No-FT's unit is not current (yet)
    if row not in unchanged:
        unchanged[row] = same_weights(rows.model(row).llm, ctx.base_model().llm)
    if unchanged[row]:
        copy_unit(base_unit, folder, {**meta, "label": f"{row} {meta['benchmark']} t2t", "copied_from": "no_ft",
                                      "why": "the LLM is the base model bit for bit; T2T does not use the adaptor"})
    return unchanged[row]


def _answer(ctx: Context, rows: _Rows, row: str, src: str, exs: list, folder: Path, meta: dict) -> None:
    from omnishift.evaluate.qa import build_eval_items, evaluate

    ev, model = ctx.cfg.evaluate, rows.model(row)
    if src == "cascade":
        from omnishift.evaluate.cascade import WhisperASR, evaluate_cascade

        rows.asr = rows.asr or WhisperASR(ev.asr_model)
        evaluate_cascade(model, rows.asr, exs, folder, eval_settings(ctx), meta=meta)
    else:
        items = build_eval_items(exs, meta["mode"], prompt=ev.prompt)
        answers, point = _curve_answers(ctx, row, meta, items, model) if src == "trained" else (None, None)
        evaluate(model, items, folder, eval_settings(ctx), label=f"{row} {meta['benchmark']} {meta['mode']}",
                 meta={**meta, "answers_from": str(point)} if answers else meta, answers=answers)


def _curve_answers(ctx: Context, row: str, meta: dict, items: list[dict], model) -> tuple[dict | None, Path | None]:
    """The T2T answers the last point of ``row``'s forgetting curve already gave (``train.drift.qa``), as
    ``{prompt: answer}``, when that point was measured on this model's LLM with these prompts and this answer
    length (:func:`~omnishift.evaluate.drift.probe_answers`); else ``(None, None)``: generate them."""
    from omnishift.evaluate.drift import probe_answers
    from omnishift.train.trainer import PROBES

    if meta["mode"] != "t2t" or meta["benchmark"] not in ctx.cfg.train.drift.qa or row not in ctx.cfg.train.methods:
        return None, None
    train_dir = ctx.dir("train") / row
    summary = train_dir / "summary.json"
    if not summary.is_file():
        return None, None
    point = train_dir / PROBES / f"step-{json.loads(summary.read_text(encoding='utf-8'))['steps']:08d}.json"
    if not point.is_file():
        return None, None
    prompts = [it["prompt"] for it in items]
    answers = probe_answers(json.loads(point.read_text(encoding="utf-8")), meta["benchmark"], model.llm, prompts,
                            ctx.cfg.evaluate.max_new_tokens)
    return (dict(zip(prompts, answers)), point) if answers is not None else (None, None)


def _heard(ctx: Context, rows: _Rows, row: str, exs: list, folder: Path, items_fp: str) -> None:
    """What the adaptor hears (its CTC transcripts), for a model with a CTC head."""
    from omnishift.evaluate.ctc import eval_ctc

    if not json.loads((rows.folder(row) / "omnishift_config.json").read_text()).get("ctc_head"):
        return
    ev = ctx.cfg.evaluate
    if not ctx.reuse(folder, {"model": rows.fp(row), "items": items_fp}, f"CTC transcripts of {row}",
                     lambda d: (d / "summary.json").is_file()):
        eval_ctc(rows.model(row), exs, folder, feature_cache=ctx.cfg.resolve(ev.feature_cache) if ev.feature_cache else None)


def stage_evaluate(ctx: Context, out: Path) -> dict:
    """T2T / S2T accuracy of No-FT, the cascade and every method on every benchmark.

    A method whose LLM is still the base model bit for bit (``frozen``: only the adaptor
    trains) answers text questions exactly as No-FT does, since T2T never touches the adaptor;
    once that is checked on the weights, its T2T units are copied from No-FT's instead of
    generated again (the summary names the source). Likewise a method's T2T units on a benchmark its
    forgetting curve probes (``train.drift.qa``) score the answers of the curve's last point, when that
    point was measured on this very LLM with these prompts and answer length (``answers_from`` names it).
    """
    from omnishift.data.manifest import read_manifest
    from omnishift.data.sources import source_fingerprint

    ev, rows = ctx.cfg.evaluate, _Rows(ctx)
    paths = ctx.benchmarks()
    benches = {name: read_manifest(p) for name, p in paths.items()}
    items_fp = {name: source_fingerprint(str(p)) for name, p in paths.items()}
    units = [(r, src, b, m) for r, src, modes in rows.rows for b in benches for m in modes]
    unchanged, waiting, busy = {}, [], []
    for i, (row, src, bench, mode) in enumerate(units, 1):
        if not ctx.mine(i - 1):
            continue
        if src == "trained" and row != "aligned" and ctx.shard is not None and not ctx.trained(row):
            waiting.append(f"{row} {bench} {mode}")  # its model is still training in another process
            continue
        folder, unit = out / row / bench / mode, f"{row} {bench} {mode}"
        meta = {"model": display(row), "row": row, "benchmark": bench, "source": ev.benchmarks[bench].source,
                "mode": mode, "prompt": ev.prompt}
        inputs = _unit_inputs(ctx, rows, row, src, items_fp[bench], mode)
        with claimed(folder, wait=ctx.shard is None, on_wait=lambda h, u=unit: _say_wait(ctx, u, h)) as mine:
            if not mine:
                busy.append(unit)  # another live process is evaluating it
                continue
            if not ctx.reuse(folder, inputs, f"evaluation {unit}", _summary_done):
                base_inputs = _unit_inputs(ctx, rows, "no_ft", "base", items_fp[bench], "t2t")
                if not (src == "trained" and mode == "t2t" and _copy_from_no_ft(
                        ctx, rows, row, folder, out / "no_ft" / bench / "t2t", meta, base_inputs, unchanged)):
                    _answer(ctx, rows, row, src, benches[bench], folder, meta)
        if src == "trained" and mode == "s2t":
            _heard(ctx, rows, row, benches[bench], out / row / bench / "ctc", items_fp[bench])
        ctx.progress.step("evaluate", i, len(units), unit)
    if (waiting or busy) and ctx.progress.stream is not None:
        print(f"evaluate: this shard skipped {len(waiting)} unit(s) whose model is not trained yet {waiting} and "
              f"{len(busy)} another process holds {busy}; run the shard again later", file=ctx.progress.stream, flush=True)
    if ev.listening and ctx.shard is None:
        _listening(ctx, rows, out)
    return {"evaluations": len(units), "skipped_untrained": waiting, "skipped_busy": busy}


def _listening(ctx: Context, rows: _Rows, out: Path) -> None:
    """The listening check of every speech row: ``ROW/listening/summary.json``."""
    from omnishift.data.items import build_items
    from omnishift.data.sources import source_fingerprint
    from omnishift.evaluate.listening import listening_check

    ev, src = ctx.cfg.evaluate, str(ctx.heldout_manifest())
    speech_rows = [r for r, kind, modes in rows.rows if kind == "trained" and "s2t" in modes]
    for i, row in enumerate(speech_rows, 1):
        folder = out / row / "listening"
        inputs = {"model": rows.fp(row), "items": source_fingerprint(src, ev.listening), "n": ev.listening}
        if not ctx.reuse(folder, inputs, f"listening check of {row}", lambda d: (d / "summary.json").is_file()):
            model = rows.model(row)
            text, _ = build_items(src, "text", limit=ev.listening, max_response_tokens=64, tokenizer=model.tokenizer)
            speech, _ = build_items(src, "speech", limit=ev.listening, max_response_tokens=64, tokenizer=model.tokenizer)
            atomic_write_text(folder / "summary.json", json.dumps({"row": row, "data": src, **listening_check(
                model, text, speech)}, indent=2) + "\n")
        ctx.progress.step("listening", i, len(speech_rows), row)


def eval_settings(ctx: Context):
    """The experiment's evaluation settings (the same for every row, benchmark and rank)."""
    from omnishift.evaluate.qa import EvalSettings

    ev = ctx.cfg.evaluate
    return EvalSettings(prompt=ev.prompt, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens,
                        progress=ctx.progress.stream is not None, feature_cache=ctx.cfg.resolve(ev.feature_cache))


def stage_ablation(ctx: Context, out: Path) -> dict:
    """Table 3: LoRA at each rank, trained and evaluated (:func:`omnishift.evaluate.ablation.ablate_rank`);
    its units go through the run's reuse rule."""
    from omnishift.evaluate.ablation import ablate_rank, ablation_base, base_overrides

    ab, ev = ctx.cfg.ablation, ctx.cfg.evaluate
    if not ab.ranks:
        return {"skipped": "ablation.ranks is empty"}
    config = ab.config
    if config is None and ctx.cfg.train.methods:
        methods = ctx.cfg.train.methods
        config = methods[ablation_base(methods)].config
    config = ctx.cfg.resolve(config)
    overrides = train_overrides(ctx, None, ab.overrides)
    overrides += base_overrides((_config_dict(config, []).get("method") or {}).get("name", "full"))
    names = ab.benchmarks or list(ev.benchmarks)
    benches = ctx.benchmarks()
    ablate_rank(config, [int(r) for r in ab.ranks], [str(benches[n]) for n in names], out, overrides=overrides,
                modes=list(ev.modes), settings=eval_settings(ctx), reuse=ctx.reuse)
    return {"ranks": list(ab.ranks)}


def stage_report(ctx: Context, out: Path) -> dict:
    from omnishift.report.build import build_report

    html = build_report(ctx.run_dir, title=ctx.cfg.report.title)
    return {"report": str(html)}
