"""Clip-window encoding (frame policy ``clip``): exact where it must be, cheap, and used consistently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_encoder, make_tiny_speech_llm, tone

from omnishift.models.encoder import encode_clips, encode_window, log_mel_features
from omnishift.models.feature_cache import EncoderFeatureCache
from omnishift.models.processor import FramePolicy, s2t_prompt


def test_full_window_equals_whisper_forward():
    enc, fe = make_tiny_encoder()
    feats = log_mel_features(fe, [tone(2.0)])  # 1, 80, 3000
    with torch.no_grad():
        ref = enc(feats).last_hidden_state
    torch.testing.assert_close(encode_window(enc, feats), ref, rtol=0, atol=1e-6)


def test_clip_window_is_the_short_mel_prefix_and_differs_from_the_30s_encoding():
    enc, fe = make_tiny_encoder()
    audio = tone(1.3)
    clip, trim = FramePolicy("clip"), FramePolicy("trim")
    frames = clip.encoder_frames(len(audio))
    assert frames == trim.encoder_frames(len(audio)) == 75  # (1.3 + 0.2) s * 50 = 75, a multiple of 5
    got = encode_clips(enc, fe, clip, [audio])[0]
    short = encode_window(enc, log_mel_features(fe, [audio])[:, :, : 2 * frames])[0]
    assert got.shape == (75, 16)
    torch.testing.assert_close(got, short, rtol=0, atol=0)
    padded = encode_clips(enc, fe, trim, [audio])[0]
    assert padded.shape == got.shape and not torch.allclose(padded, got, atol=1e-3)


def test_encode_window_rejects_odd_or_too_long_windows():
    enc, _ = make_tiny_encoder()
    with pytest.raises(ValueError, match="even count"):
        encode_window(enc, torch.zeros(1, 80, 7))
    with pytest.raises(ValueError, match="up to 3000"):
        encode_window(enc, torch.zeros(1, 80, 3002))


def test_speech_llm_uses_its_window_in_forward_and_cache(tmp_path, tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer, frame_policy="clip")
    items = [{"prompt": s2t_prompt(), "audio": tone(0.8 + 0.5 * i, seed=i), "response": "ok"} for i in range(3)]
    batch = m.processor(items)
    states = m.encode_features(batch["input_features"], batch["speech_frames"])  # N, max frames, C
    for i, it in enumerate(items):  # batched clips equal each clip encoded alone
        alone = m.encode_audio([it["audio"]])[0]
        torch.testing.assert_close(states[i, : alone.shape[0]], alone, rtol=0, atol=1e-6)
    cache = EncoderFeatureCache(tmp_path, m)
    with torch.no_grad():
        ref = m(batch).logits
        got = m(m.processor(cache.attach(items))).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    trim = make_tiny_speech_llm(tiny_tokenizer, frame_policy="trim")  # same encoder, other window: other key
    assert EncoderFeatureCache(tmp_path, trim).states([items[0]["audio"]])[0] != cache.states([items[0]["audio"]])[0]


@pytest.mark.integration
def test_clip_window_matches_ctranslate2_short_mel_encode():
    """The reference: CTranslate2's Whisper ``encode`` accepts a mel shorter than 30 s."""
    import ctranslate2

    from omnishift.data.synth import synthesize
    from omnishift.models.defaults import load_encoder, whisper_ct2_dir

    enc, fe = load_encoder("whisper-tiny.en")
    audio = synthesize("What is the capital of France?")
    policy = FramePolicy("clip")
    frames = policy.encoder_frames(len(audio))
    feats = log_mel_features(fe, [audio])[:, :, : 2 * frames].numpy()
    ref = np.array(ctranslate2.models.Whisper(str(whisper_ct2_dir())).encode(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), to_cpu=True))[0]
    got = encode_clips(enc, fe, policy, [audio])[0].numpy()
    assert got.shape == ref.shape == (frames, 384)
    assert np.abs(got - ref).max() < 2e-3  # fp16 weights in CTranslate2 (measured 6.9e-4)
