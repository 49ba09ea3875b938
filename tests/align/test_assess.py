"""eval-aligned: greedy and beam WER, S2T and listening gain of an aligned folder in one call."""

from __future__ import annotations

import json

import pytest
from tiny_models import save_tiny_parts

from omnishift.align.assess import assess_aligned
from omnishift.data.manifest import Example


@pytest.fixture()
def aligned(tmp_path, tiny_tokenizer):
    from omnishift.models.speech_llm import SpeechLLM, SpeechLLMConfig

    parts = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, seed=3, adaptor_norm=True, ctc_head=True,
                            frame_policy="clip", k=1)
    cfg = SpeechLLMConfig(**{**parts.__dict__, "speech_input": "ctc_top1", "ctc_decoding": {"beam": 2}})
    return SpeechLLM.from_config(cfg).save_pretrained(tmp_path / "aligned", llm_is_base=True)


def _examples(tmp_path):
    import numpy as np
    import soundfile as sf

    rng, out = np.random.default_rng(0), []
    for i, (q, a) in enumerate([("capital of France", "Paris"), ("legs of a spider", "eight"), ("gold", "Au")]):
        f = tmp_path / f"q{i}.wav"
        sf.write(f, (0.1 * rng.standard_normal(8000 + 1600 * i)).astype(np.float32), 16000)
        out.append(Example(f"q{i}", q, audio=str(f), answers=[a]))
    return out


def test_one_call_gives_both_wers_s2t_and_the_listening_gain(tmp_path, aligned, monkeypatch):
    """The tiny LLM answers every question with an empty string, so the listening responses (the
    model's own T2T answers) are given here; the next test checks that empty answers are skipped."""
    import omnishift.align.assess as assess
    from omnishift.data.manifest import write_manifest
    from omnishift.evaluate.ctc import eval_ctc
    from omnishift.evaluate.qa import EvalSettings
    from omnishift.models.speech_llm import SpeechLLM

    exs = _examples(tmp_path)
    monkeypatch.setattr(assess, "_self_answers", lambda model, examples, out, n, *a: write_manifest(
        out / "listen.jsonl", [__import__("dataclasses").replace(e, response="An answer.") for e in examples[:n]]))
    settings = EvalSettings(max_new_tokens=3, progress=False, feature_cache=tmp_path / "out" / "features")
    s = assess_aligned(aligned, exs, tmp_path / "out", listen=3, workers=1, settings=settings, progress=False)
    assert s["n"] == 3 and s["ctc_decoding"] == {"beam": 2} and s["speech_input"] == "ctc_top1"
    assert 0 <= s["wer"] and 0 <= s["wer_greedy"] and 0 <= s["s2t"] <= 1 and s["listening_n"] == 3
    # token rows: no gap, and the nearest-token reading is the beam transcript itself
    assert s["cosine_gap"] == pytest.approx(0.0, abs=1e-5) and s["nearest_token_wer"] == s["wer"]
    listen = json.loads((tmp_path / "out" / "listening.json").read_text())
    assert s["listening_gain_nats"] == listen["gain_nats"] and listen["n"] >= 2
    # the greedy and the beam transcripts are those eval_ctc gives for each reading
    greedy = SpeechLLM.from_pretrained(aligned)
    greedy.config.ctc_decoding, greedy.beam_settings = None, None
    assert eval_ctc(greedy, exs, tmp_path / "g")["wer"] == s["wer_greedy"]
    assert eval_ctc(SpeechLLM.from_pretrained(aligned), exs, tmp_path / "b")["wer"] == s["wer"]
    mtime = (tmp_path / "out" / "s2t" / "items.jsonl").stat().st_mtime_ns
    again = assess_aligned(aligned, exs, tmp_path / "out", listen=3, workers=1, settings=settings, progress=False)
    assert (tmp_path / "out" / "s2t" / "items.jsonl").stat().st_mtime_ns == mtime  # reused, not redone
    assert {k: again[k] for k in ("wer", "wer_greedy", "s2t")} == {k: s[k] for k in ("wer", "wer_greedy", "s2t")}


def test_empty_own_answers_skip_the_listening_check_with_a_reason(tmp_path, aligned):
    from omnishift.evaluate.qa import EvalSettings

    settings = EvalSettings(max_new_tokens=3, progress=False, feature_cache=tmp_path / "out" / "features")
    s = assess_aligned(aligned, _examples(tmp_path), tmp_path / "out", listen=3, workers=1, settings=settings,
                       progress=False)
    assert s["listening_gain_nats"] is None and s["listening_skipped"] == "only 0 of the first 3 T2T answers are non-empty"
