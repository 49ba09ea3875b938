"""What an aligned model hears and answers, in one call: greedy and beam CTC WER, S2T accuracy and
the listening gain on a benchmark's recordings, into one ``summary.json``.

The beam (with the LLM as language model) is the costly part, ~2 s a clip on one core, and the
transcripts, the S2T answers and the listening check all read the same decodings: so the clips are
decoded once, in parallel, into the token cache (:func:`omnishift.align.decode.decode_clips`),
and every later read is a cache hit. The listening gain asks how much each question's own
recording helps predict the answer the model gives to its *text* (``ln(PPL other clip / PPL own
clip)`` per response token): the model's T2T answers are generated first and used as responses.

Each part is a unit reused only when made from the same model folder and items, by content
(:func:`omnishift.reuse.reuse_unit`): a rerun into the same ``--out`` repeats nothing, and another
model is refused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from omnishift.paths import atomic_write_text, ensure_writable_dir
from omnishift.reuse import reuse_unit


def _unit(out: Path, inputs: dict, what: str, done: str) -> bool:
    return reuse_unit(out, inputs, what=what, redo=False, complete=lambda d: (d / done).is_file(),
                      fix="assess into a new --out (or delete this folder)")


def _self_answers(model, examples, out: Path, n: int, settings, inputs: dict) -> Path:
    """A manifest of the first ``n`` questions with the model's own T2T answers as responses."""
    from omnishift.data.manifest import write_manifest
    from omnishift.evaluate.qa import build_eval_items, evaluate

    if not _unit(out / "t2t_self", inputs, "T2T answers", "summary.json"):
        evaluate(model, build_eval_items(examples[:n], "t2t", prompt=settings.prompt), out / "t2t_self", settings,
                 label="own T2T answers (listening responses)")
    answers = {json.loads(x)["id"]: json.loads(x)["output"]
               for x in (out / "t2t_self" / "items.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()}
    rows = [dataclasses.replace(e, response=answers[e.id]) for e in examples[:n] if answers.get(e.id, "").strip()]
    return write_manifest(out / "listen.jsonl", rows)


def _gap(model, examples, out: Path, fc: Path, inputs: dict) -> dict:
    """The modality gap of the speech vectors on the benchmark's clips (``modality/summary.json``)."""
    from omnishift.data.audio import load_audio
    from omnishift.evaluate.modality import modality_gap
    from omnishift.models.feature_cache import EncoderFeatureCache
    from omnishift.models.processor import load_states

    if not _unit(out / "modality", inputs, "modality gap", "summary.json"):
        cache = EncoderFeatureCache(fc, model)
        states = [load_states(p) for p in cache.states([load_audio(e.audio, item=e.id) for e in examples])]
        gap = modality_gap(model, states, [e.text for e in examples])
        atomic_write_text(out / "modality" / "summary.json", json.dumps(gap, indent=2) + "\n")
    return json.loads((out / "modality" / "summary.json").read_text(encoding="utf-8"))


def assess_aligned(folder: str | Path, examples: list, out: str | Path, *, listen: int = 100, workers: int = 2,
                   settings=None, progress: bool = True) -> dict:
    """Greedy / beam CTC WER, S2T and listening gain of ``folder`` on ``examples`` (with audio).

    Args:
        folder: an aligned speech-LLM folder with a CTC head (it says how it reads speech).
        examples: the benchmark's examples (audio and reference answers).
        out: output folder: ``ctc_greedy/``, ``ctc/``, ``s2t/``, ``modality/``, ``t2t_self/``, ``listening.json``,
            ``summary.json`` (and ``features/``, the encoder and token caches).
        listen: questions of the listening check (0: skip it).
        workers: single-threaded processes decoding the clips.
        settings: :class:`~omnishift.evaluate.qa.EvalSettings` of the S2T evaluation.
    """
    from omnishift.align.decode import decode_clips
    from omnishift.data.items import build_items
    from omnishift.data.manifest import write_manifest
    from omnishift.evaluate.ctc import eval_ctc
    from omnishift.evaluate.listening import listening_check
    from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate
    from omnishift.fingerprint import fingerprint
    from omnishift.models.identity import folder_fingerprint
    from omnishift.models.speech_llm import SpeechLLM
    from omnishift.reuse import content_sha256

    out, folder = ensure_writable_dir(out), Path(folder)
    fc = out / "features"
    bench = write_manifest(out / "bench.jsonl", examples)
    inputs = {"model": folder_fingerprint(folder), "items": fingerprint([content_sha256(bench)] +
                                                                         [content_sha256(e.audio) for e in examples])}
    t, times = time.perf_counter(), {}
    model = SpeechLLM.from_pretrained(folder)
    if not model.config.ctc_head:
        raise ValueError(f"{folder}: no CTC head (ctc_head: false): nothing to transcribe; assess an aligned folder")
    listen = min(listen, len(examples))
    raw = [bench] if listen and model.reading.beam else []  # the listening check decodes raw audio
    times["decode"] = decode_clips(folder, fc, [bench], raw=raw, raw_limit=listen, workers=workers,
                                   progress=progress) if model.config.ctc_decoding else None
    settings = EvalSettings(progress=progress, feature_cache=fc) if settings is None else settings
    model.use_token_cache(fc / "ctc_tokens")
    if not _unit(out / "ctc", inputs, "CTC transcripts", "summary.json"):
        eval_ctc(model, examples, out / "ctc", feature_cache=fc)
    greedy = SpeechLLM.from_pretrained(folder, reading={"ctc_decoding": None})  # the same weights, read greedily
    if not _unit(out / "ctc_greedy", inputs, "greedy CTC transcripts", "summary.json"):
        eval_ctc(greedy, examples, out / "ctc_greedy", feature_cache=fc)
    if not _unit(out / "s2t", inputs, "S2T evaluation", "summary.json"):
        evaluate(model, build_eval_items(examples, "s2t", prompt=settings.prompt), out / "s2t", settings,
                 label=f"{folder.name} s2t", meta={"model": str(folder), "mode": "s2t"})
    gap = _gap(model, examples, out, fc, inputs)
    listening, skipped = None, None if listen >= 2 else "--listen is below 2"
    if listen >= 2:
        data = _self_answers(model, examples, out, listen, settings, inputs)
        rows = sum(1 for line in data.read_text(encoding="utf-8").splitlines() if line.strip())
        if rows < 2:  # an answer that is empty gives no response to score
            skipped = f"only {rows} of the first {listen} T2T answers are non-empty"
        else:
            text, _ = build_items(str(data), "text", max_response_tokens=64, tokenizer=model.tokenizer)
            speech, _ = build_items(str(data), "speech", max_response_tokens=64, tokenizer=model.tokenizer)
            listening = listening_check(model, text, speech)
            atomic_write_text(out / "listening.json", json.dumps({"data": str(data), **listening}, indent=2) + "\n")
    read = lambda p: json.loads((out / p / "summary.json").read_text(encoding="utf-8"))  # noqa: E731
    s2t = read("s2t")
    summary = {"model": str(folder), "n": len(examples), "speech_input": model.config.speech_input,
               "speech_options": model.config.speech_options,
               "ctc_decoding": model.config.ctc_decoding, "wer_greedy": read("ctc_greedy")["wer"],
               "wer": read("ctc")["wer"], "s2t": s2t["accuracy"], "s2t_ci95": s2t["ci95"], "s2t_correct": s2t["correct"],
               "cosine_gap": gap.get("cosine_gap"), "norm_ratio": gap.get("norm_ratio"),
               "nearest_token_wer": gap.get("nearest_token_wer"),
               "listening_gain_nats": None if listening is None else listening["gain_nats"],
               "listening_n": None if listening is None else listening["n"], "listening_skipped": skipped,
               "seconds": round(time.perf_counter() - t, 1), "decoded": times["decode"]}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
