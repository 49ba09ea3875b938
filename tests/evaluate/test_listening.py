"""The listening check: an adaptor that outputs nothing item-specific gives no gain; a real one does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_speech_llm

from omnishift.evaluate.listening import listening_check
from omnishift.importance.deactivate import perplexity


def _items(n=4):
    rng = np.random.default_rng(0)
    text, speech = [], []
    for i in range(n):
        resp = f"answer number {i} is here"
        text.append({"prompt": f"question {i}?", "response": resp})
        speech.append({"prompt": "<speech>", "audio": (0.2 * rng.standard_normal(1600 * (3 + i))).astype("float32"),
                       "response": resp})
    return text, speech


def test_gain_is_log_ratio_of_own_and_swapped_clip_perplexity(tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    text, speech = _items()
    r = listening_check(m, text, speech, batch_size=2)
    swapped = [{**it, "audio": speech[(i + 1) % 4]["audio"]} for i, it in enumerate(speech)]
    assert r["ppl_speech"] == pytest.approx(perplexity(m, speech))
    assert r["ppl_speech_mismatched"] == pytest.approx(perplexity(m, swapped))
    assert r["gain_nats"] == pytest.approx(math.log(r["ppl_speech_mismatched"] / r["ppl_speech"]))
    assert r["gain_nats"] != 0  # a random adaptor passes item-specific (if useless) signal
    assert r["ppl_text"] == pytest.approx(perplexity(m, text)) and r["n"] == 4


def test_content_free_adaptor_gains_nothing(tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    with torch.no_grad():
        m.adaptor.linear1.weight.zero_()  # output = f(bias) only: the same soft prompt for every clip
    text, speech = _items()
    # equal-length clips, so swapping changes nothing but the (ignored) content
    for it in speech:
        it["audio"] = it["audio"][:1600 * 3]
    r = listening_check(m, text, speech)
    assert r["gain_nats"] == pytest.approx(0.0, abs=1e-6)


def test_needs_matching_items(tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    text, speech = _items()
    with pytest.raises(ValueError, match="same >= 2 items"):
        listening_check(m, text[:3], speech)
