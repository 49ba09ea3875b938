"""The modality gap: zero for token rows, positive and measured for continuous vectors."""

from __future__ import annotations

import pytest
import torch

from omnishift.evaluate.modality import modality_gap
from tiny_models import make_tiny_speech_llm, tone


def _model(tok, reading):
    m = make_tiny_speech_llm(tok, adaptor_norm=True, ctc_head=True, frame_policy="clip", speech_input=reading)
    with torch.no_grad():
        m.adaptor.ctc_blank.zero_()
        m.adaptor.ctc_blank[-1] = -1e4  # the blank never wins
    return m


def test_token_rows_have_no_gap_and_read_as_their_transcript(tiny_tokenizer):
    m = _model(tiny_tokenizer, "ctc_top1")
    clips = [m.encode_audio([tone(0.8, seed=s)])[0] for s in range(2)]
    texts = m.ctc_transcripts(clips)
    g = modality_gap(m, clips, texts)
    assert g["cosine_gap"] == pytest.approx(0.0, abs=1e-5) and g["nearest_token_wer"] == 0.0
    rows = m.llm.get_input_embeddings().weight
    want = torch.cat([m.speech_vectors(c) for c in clips]).norm(dim=-1).mean() / rows.norm(dim=-1).mean()
    assert g["norm_ratio"] == pytest.approx(float(want), rel=1e-3)


def test_posterior_mixes_are_off_the_rows(tiny_tokenizer):
    m = _model(tiny_tokenizer, "ctc_soft")
    clips = [m.encode_audio([tone(0.8, seed=s)])[0] for s in range(2)]
    g = modality_gap(m, clips, ["a b", "c d"])
    lo, mid, hi = g["cosine_gap_q10_q50_q90"]
    assert g["cosine_gap"] > 1e-3 and lo <= mid <= hi and g["vectors"] == sum(len(m.speech_vectors(c)) for c in clips)
