"""Cascade baseline: transcripts reach the LLM as T2T prompts, WER is pooled, resume skips the ASR."""

from __future__ import annotations

import json

import pytest
from tiny_models import make_tiny_speech_llm, tone

from omnishift.data.manifest import Example
from omnishift.data.synth import write_wav
from omnishift.evaluate.cascade import evaluate_cascade
from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate


class FakeASR:
    """Returns canned transcripts, one per call in order, and counts calls."""

    name = "fake-asr"

    def __init__(self, texts):
        self.texts, self.calls = list(texts), 0

    def transcribe(self, audios, batch_size=8):
        self.calls += 1
        out, self.texts = self.texts[:len(audios)], self.texts[len(audios):]
        return out


def _examples(tmp_path):
    qs = [("q0", "What is the capital of France?", "Paris"), ("q1", "How many legs does a spider have?", "8"),
          ("q2", "Who wrote Hamlet?", "Shakespeare")]
    out = []
    for i, (qid, q, a) in enumerate(qs):
        wav = write_wav(tmp_path / "wav" / f"{qid}.wav", tone(0.3, seed=i))
        out.append(Example(id=qid, text=q, audio=str(wav), answers=[a]))
    return out


def test_cascade_items_wer_and_resume(tmp_path, tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    exs = _examples(tmp_path)
    heard = ["what is the capital of france", "how many legs does the spider have", "who wrote"]
    asr = FakeASR(heard)
    s = evaluate_cascade(m, asr, exs, tmp_path / "c", EvalSettings(max_new_tokens=3, progress=False), meta={"model": "cascade"})
    # by hand: 0 errors / 6 words; "a" -> "the" 1 / 7; "hamlet" deleted 1 / 3
    assert (s["asr_errors"], s["asr_reference_words"]) == (2, 16) and s["wer"] == pytest.approx(2 / 16)
    assert s["model"] == "cascade" and s["n"] == 3 and s["asr_model"] == "fake-asr"
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "c" / "items.jsonl").read_text().splitlines())}
    assert recs["q1"]["transcript"] == heard[1] and recs["q1"]["word_errors"] == 1
    assert recs["q1"]["question"] == exs[1].text  # the reference stays the benchmark's question
    # the LLM saw exactly the T2T prompt of the transcript: same outputs as a T2T run on the transcripts
    t2t = build_eval_items([Example(id=e.id, text=h, answers=e.answers) for e, h in zip(exs, heard)], "t2t")
    evaluate(m, t2t, tmp_path / "t", EvalSettings(max_new_tokens=3, progress=False))
    direct = {r["id"]: r["output"] for r in map(json.loads, (tmp_path / "t" / "items.jsonl").read_text().splitlines())}
    assert {k: r["output"] for k, r in recs.items()} == direct
    # resume: transcripts are cached, the ASR is not called again
    again = FakeASR([])
    s2 = evaluate_cascade(m, again, exs, tmp_path / "c", EvalSettings(max_new_tokens=3, progress=False))
    assert again.calls == 0 and s2["wer"] == s["wer"] and s2["accuracy"] == s["accuracy"]


def test_cascade_needs_audio(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="item 'x' has no audio for the cascade"):
        evaluate_cascade(make_tiny_speech_llm(tiny_tokenizer), FakeASR([]), [Example(id="x", text="q", answers=["a"])],
                         tmp_path, EvalSettings(progress=False))


@pytest.mark.integration
def test_whisper_asr_transcribes_recordings(shared_data):
    from omnishift.data.audio import load_audio
    from omnishift.data.sources import load_llama_questions
    from omnishift.evaluate.cascade import WhisperASR
    from omnishift.evaluate.wer import corpus_wer

    exs = load_llama_questions(shared_data, limit=4)
    texts = WhisperASR(threads=2).transcribe([load_audio(e.audio) for e in exs], batch_size=4)
    assert texts[0] == "What is the capital of France?"
    assert corpus_wer([(e.text, t) for e, t in zip(exs, texts)])["wer"] < 0.1
