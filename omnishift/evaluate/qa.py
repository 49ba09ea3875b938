"""Dual-modality spoken QA (paper Sec. 3.2): the same questions as text (T2T) and as speech (S2T).

Prompts and decoding are identical for every model: the LLM's chat template; S2T user turn
``<speech>\\nPlease directly answer the questions in the user's speech.`` (LLaMA-Omni), T2T the
question text followed by the same instruction (``prompt="instruction"``) or the bare question
(``prompt="plain"``); greedy decoding with continuous batching (a finished answer's slot takes the
next question; outputs equal one-at-a-time decoding). Items are sorted by prompt length first (left
padding), which changes nothing in greedy outputs but wastes less compute on padding.

Per-item results stream to ``items.jsonl`` (append + flush), so an interrupted evaluation resumes
from the items already answered; ``summary.json`` holds accuracy, a seeded bootstrap 95% CI and
what was evaluated (model, benchmark, mode, prompt, subset), so tables are built from summaries
alone (:mod:`omnishift.evaluate.table`).

A fixed-seed subset (:func:`select_subset`) keeps the items whose ``sha256(seed:id)`` is smallest:
the choice depends only on the ids and the seed, never on the model, the file order or the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from omnishift.evaluate.scoring import bootstrap_ci, is_correct
from omnishift.models.processor import s2t_prompt, t2t_prompt
from omnishift.claims import claimed, holder
from omnishift.paths import atomic_write_text, read_jsonl_tolerant, write_error

log = logging.getLogger(__name__)

PROMPTS = ("instruction", "plain")  # T2T user turn: question + LLaMA-Omni instruction, or the bare question


def select_subset(examples: list, n: int | None, seed: int = 0) -> list:
    """A deterministic sample of ``n`` examples, the same for every model and every call.

    Args:
        examples: objects with an ``id``; ids must be unique.
        n: sample size (None or >= len(examples): all of them).
        seed: which sample.

    Returns:
        The chosen examples in their original order.
    """
    if n is None or n >= len(examples):
        return list(examples)
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    rank = lambda e: hashlib.sha256(f"{seed}:{e.id}".encode()).hexdigest()  # noqa: E731
    keep = {e.id for e in sorted(examples, key=rank)[:n]}
    return [e for e in examples if e.id in keep]


def load_benchmark(spec: str, modes=("t2t",), limit: int | None = None, subset: int | None = None, seed: int = 0,
                   audio_dir: str | Path | None = None) -> list:
    """Benchmark examples ready for the given modes.

    Args:
        spec: ``llama_questions``, ``web_questions[:split]`` or a manifest path.
        modes: the modes to be run; ``s2t`` needs audio, which is synthesized with eSpeak NG into
            ``audio_dir`` when the benchmark has none (Web Questions), once, and reused.
        limit: read only the first ``limit`` examples.
        subset: then keep a fixed-seed sample of this many (:func:`select_subset`).
        seed: the sample's seed.
        audio_dir: where synthesized audio lives.

    Returns:
        :class:`~omnishift.data.manifest.Example` list.
    """
    from omnishift.data.sources import load_source

    examples = select_subset(load_source(spec, limit=limit), subset, seed)
    if "s2t" in modes and not all(e.audio for e in examples):
        if not audio_dir:
            raise ValueError(f"benchmark {spec!r} has no recordings: pass --audio-dir DIR to synthesize its questions "
                             "with eSpeak NG (done once, reused afterwards)")
        from omnishift.data.synth import ensure_audio

        examples, _ = ensure_audio(examples, audio_dir)
    return examples


def build_eval_items(examples, mode: str, prompt: str = "instruction") -> list[dict]:
    """Processor items plus bookkeeping (id, question, references) for one mode."""
    from omnishift.data.audio import is_silent, load_audio

    if mode not in ("t2t", "s2t"):
        raise ValueError(f"mode {mode!r} unknown: use t2t or s2t")
    if prompt not in PROMPTS:
        raise ValueError(f"prompt {prompt!r} unknown: use one of {PROMPTS}")
    items = []
    for e in examples:
        if not e.answers:
            raise ValueError(f"item {e.id!r} has no reference answers; QA evaluation needs 'answers'")
        item = {"id": e.id, "question": e.text, "references": e.answers}
        if mode == "t2t":
            item["prompt"] = t2t_prompt(e.text) if prompt == "instruction" else e.text
        else:
            if not e.audio:
                raise ValueError(f"item {e.id!r} has no audio for S2T: synthesize it with `omnishift data synth`")
            item["prompt"], item["audio"] = s2t_prompt(), load_audio(e.audio, item=e.id)
            if is_silent(item["audio"]):
                item["extra"] = {**item.get("extra", {}), "silent_audio": True}  # recorded and counted
        items.append(item)
    return items


def item_key(item: dict) -> str:
    """Fingerprint of what an answer depends on besides the model: prompt, audio samples, references."""
    from omnishift.fingerprint import fingerprint

    audio = item.get("audio")
    if audio is not None and not isinstance(audio, (str, Path)):
        audio = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()
    return fingerprint({"prompt": item["prompt"], "audio": audio, "references": item["references"]})


@dataclass(frozen=True)
class EvalSettings:
    """How every compared model is asked and decoded: one value passed through ``evaluate``,
    ``evaluate_cascade``, ``ablate_rank`` and the pipeline, so two rows of a table can only differ
    by their model.

    Args:
        prompt: T2T user turn: ``instruction`` (question + LLaMA-Omni instruction) or ``plain``.
        batch_size: questions generated together: slots of the continuous batch, or the size of
            each static batch.
        max_new_tokens: answer length cap.
        progress: show a tqdm bar.
        feature_cache: folder of cached Whisper encoder outputs
            (:class:`~omnishift.models.feature_cache.EncoderFeatureCache`). The encoder is frozen
            in every method, so all models evaluated on a benchmark share one encoding per clip
            instead of each re-encoding a 30-s window per question.
        continuous: hand all unanswered items to ``model.generate_stream`` (continuous batching:
            a finished answer's slot takes the next question, and each answer is written as soon
            as it completes); False: static batches of ``batch_size`` through ``model.generate``
            (kept for comparison in ``benchmarks/eval.py``). Outputs are identical either way.
        asr_batch_size: the cascade's clips transcribed together.
    """

    prompt: str = "instruction"
    batch_size: int = 16
    max_new_tokens: int = 64
    progress: bool = True
    feature_cache: str | Path | None = None
    continuous: bool = True
    asr_batch_size: int = 8

    def __post_init__(self):
        if self.prompt not in PROMPTS:
            raise ValueError(f"prompt {self.prompt!r} unknown: use one of {PROMPTS}")
        for name in ("batch_size", "max_new_tokens", "asr_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class BenchmarkSelection:
    """Which items of a benchmark are evaluated (the same for every model).

    Args:
        limit: read only the first ``limit`` examples.
        subset: then keep a fixed-seed sample of this many (:func:`select_subset`).
        seed: the sample's seed.
        audio_dir: where S2T audio is synthesized when the benchmark has none.
    """

    limit: int | None = None
    subset: int | None = None
    seed: int = 0
    audio_dir: str | Path | None = None

    def load(self, spec: str, modes=("t2t",)) -> list:
        """:func:`load_benchmark` with this selection."""
        return load_benchmark(spec, modes, self.limit, self.subset, self.seed, self.audio_dir)

    def meta(self) -> dict:
        """The selection as summary fields."""
        return {"limit": self.limit, "subset": self.subset, "seed": self.seed}


def evaluate(model, items: list[dict], out_dir: str | Path, settings: EvalSettings | None = None, *,
             label: str = "", meta: dict | None = None, answers: dict[str, str] | None = None) -> dict:
    """Answer, score and summarise; resumes from ``out_dir/items.jsonl``.

    Args:
        model: a :class:`~omnishift.models.speech_llm.SpeechLLM` (anything with ``processor`` and
            ``generate_stream``, or ``generate`` when ``settings.continuous`` is False).
        items: from :func:`build_eval_items`; an item's ``extra`` dict (e.g. a cascade's
            transcript) is copied into its ``items.jsonl`` record.
        out_dir: folder for ``items.jsonl`` and ``summary.json``.
        settings: batch size, answer length, progress bar, feature cache, batching (default
            :class:`EvalSettings`); the prompt is already in ``items``.
        label: free-text name of the run, kept in the summary.
        meta: what was evaluated (``model``, ``benchmark``, ``mode``, ``prompt``, ...), merged
            into the summary.
        answers: ``model``'s greedy answers to these items' prompts, already generated with these settings
            (a forgetting curve's last point, :func:`~omnishift.evaluate.drift.probe_answers`): scored and
            recorded instead of generated again; every item's prompt must have one.

    Returns:
        The summary dict (``accuracy``, ``ci95``, ``n``, ``correct``, ``seconds``, ``questions_per_s``
        plus ``meta``).
    """
    out_dir = Path(out_dir)
    with claimed(out_dir, wait=False) as mine:  # two evaluators appending to one items.jsonl would answer twice
        if not mine:
            h = holder(out_dir) or {}
            raise FileExistsError(f"{out_dir}: process {h.get('pid')} on {h.get('host')} is evaluating into this folder; "
                                  "wait for it to finish (then rerun to resume) or use another --out")
        return _evaluate(model, items, out_dir, settings or EvalSettings(), label, meta, answers)


def _evaluate(model, items: list[dict], out_dir: Path, settings: EvalSettings, label: str, meta: dict | None,
              answers: dict[str, str] | None = None) -> dict:
    from omnishift.fingerprint import check_produced_by, model_identity

    batch_size, max_new_tokens, feature_cache = settings.batch_size, settings.max_new_tokens, settings.feature_cache
    check_produced_by(out_dir, {"model": model_identity(model), "max_new_tokens": max_new_tokens}, "evaluation",
                      "evaluate into a new --out folder (or delete this one)", results=("items.jsonl", "summary.json"))
    done_file = out_dir / "items.jsonl"
    done = {}
    if done_file.is_file():
        done = {r["id"]: r for r in read_jsonl_tolerant(done_file)}
    keys = {it["id"]: item_key(it) for it in items}
    todo = [it for it in items if done.get(it["id"], {}).get("item_key") != keys[it["id"]]]  # new or changed
    todo.sort(key=lambda it: len(it["prompt"]) + (len(it["audio"]) / 1600 if "audio" in it else 0))
    if feature_cache is not None and any("audio" in it for it in todo):
        from omnishift.models.feature_cache import EncoderFeatureCache

        todo = EncoderFeatureCache(feature_cache, model).attach(todo)  # audio -> encoder_states (a cache file)
        model.use_token_cache(Path(feature_cache) / "ctc_tokens")  # beam-decoded CTC input, if any
    t0 = time.perf_counter()
    try:
        _answer_all(model, todo, items, done, keys, done_file, settings, label, answers)
    except OSError as e:
        raise write_error(e, done_file) from None
    seconds = time.perf_counter() - t0
    verdicts = [done[it["id"]]["correct"] for it in items]
    lo, hi = bootstrap_ci(verdicts)
    summary = {"label": label, **(meta or {}), "n": len(verdicts), "correct": int(sum(verdicts)),
               "accuracy": sum(verdicts) / len(verdicts), "ci95": [lo, hi], "max_new_tokens": max_new_tokens,
               "batch_size": batch_size, "seconds": round(seconds, 2),
               "questions_per_s": round(len(todo) / seconds, 3) if todo and seconds > 0 else None,
               "silent_audio": sum(1 for it in items if it.get("extra", {}).get("silent_audio"))}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _answer_all(model, todo: list[dict], items: list[dict], done: dict, keys: dict, done_file: Path,
                settings: EvalSettings, label: str, answers: dict[str, str] | None = None) -> None:
    """Generate the answers of ``todo`` (or take them from ``answers``), each appended to ``done_file`` as soon
    as it completes."""
    batch_size, max_new_tokens = settings.batch_size, settings.max_new_tokens
    with open(done_file, "a", encoding="utf-8") as f, tqdm(total=len(items), initial=len(items) - len(todo),
                                                           desc=f"eval {label}".strip(), disable=not settings.progress) as bar:
        def record(it: dict, out: str) -> None:
            rec = {"id": it["id"], "question": it["question"], "references": it["references"],
                   **it.get("extra", {}), "output": out, "correct": is_correct(out, it["references"]),
                   "item_key": keys[it["id"]]}
            done[it["id"]] = rec
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

        prompts = [{k: it[k] for k in ("prompt", "audio", "encoder_states") if k in it} for it in todo]
        if answers is not None:
            missing = [it["id"] for it in todo if it["prompt"] not in answers]
            if missing:
                raise ValueError(f"{len(missing)} item(s) have no given answer, e.g. {missing[:3]}")
            for it in todo:
                record(it, answers[it["prompt"]])
            bar.update(len(todo))
        elif settings.continuous:
            for i, out in model.generate_stream(prompts, slots=batch_size, max_new_tokens=max_new_tokens):
                record(todo[i], out)
                f.flush()  # each answer is on disk as soon as it completes: an interruption loses none
                bar.update(1)
        else:
            for s in range(0, len(todo), batch_size):
                batch = model.processor(prompts[s:s + batch_size], padding_side="left")
                for it, out in zip(todo[s:s + batch_size], model.generate(batch, max_new_tokens=max_new_tokens)):
                    record(it, out)
                f.flush()
                bar.update(len(batch["input_ids"]))
