"""Encoder feature cache: same outputs as encoding on the fly, hits on reuse, never stale."""

from __future__ import annotations

import torch
from tiny_models import make_tiny_speech_llm, tone

from omnishift.models.feature_cache import EncoderFeatureCache
from omnishift.models.processor import s2t_prompt


def _items():
    return [{"prompt": s2t_prompt(), "audio": tone(1.0 + i, seed=i), "response": f"answer {i}"} for i in range(3)]


def test_cached_states_give_the_same_loss_and_logits(tmp_path, tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    items = _items()
    cache = EncoderFeatureCache(tmp_path / "cache", m, batch_size=2)
    cached = cache.attach(items)
    assert cache.misses == 3 and cache.hits == 0
    assert all("audio" not in it and it["encoder_states"].is_file() for it in cached)
    with torch.no_grad():
        ref = m(m.processor(items))
        got = m(m.processor(cached))
    torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.loss, ref.loss, rtol=0, atol=1e-6)
    again = cache.attach(items)
    assert cache.hits == 3 and [it["encoder_states"] for it in again] == [it["encoder_states"] for it in cached]


def test_cache_is_keyed_by_encoder_and_policy_and_heals(tmp_path, tiny_tokenizer):
    a = make_tiny_speech_llm(tiny_tokenizer, seed=0)
    b = make_tiny_speech_llm(tiny_tokenizer, seed=1)  # another encoder
    pad = make_tiny_speech_llm(tiny_tokenizer, seed=0, frame_policy="pad30")
    audio = [tone(1.5)]
    pa = EncoderFeatureCache(tmp_path, a).states(audio)[0]
    pb = EncoderFeatureCache(tmp_path, b).states(audio)[0]
    pp = EncoderFeatureCache(tmp_path, pad).states(audio)[0]
    assert len({pa, pb, pp}) == 3
    pa.write_bytes(b"torn write")
    cache = EncoderFeatureCache(tmp_path, a)
    assert cache.states(audio)[0] == pa and cache.misses == 1  # recomputed, not served
    from safetensors.torch import load_file

    assert load_file(pa)["states"].shape[0] == a.processor.frame_policy.encoder_frames(len(audio[0]))


def test_mixing_audio_and_cached_items_is_an_error(tmp_path, tiny_tokenizer):
    import pytest

    m = make_tiny_speech_llm(tiny_tokenizer)
    items = _items()
    cached = EncoderFeatureCache(tmp_path, m).attach(items[:1])
    with pytest.raises(ValueError, match="mixes raw audio and cached"):
        m.processor(cached + items[1:])
