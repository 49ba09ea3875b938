"""The CTC front end stays the aligned one under Stage 1, and its beam-decoded tokens are cached per clip."""

import json

import pytest
import torch

from omnishift.models.ctc_decode import LLMPrior, ctc_beam_search, user_turn_context, user_turn_end
from tests.tiny_models import make_tiny_speech_llm, tone

BEAM = {"beam": 4, "lm_weight": 3.0, "length_bonus": 0.5}  # a heavy LM weight: the prior decides


def _model(tok, **kw):
    return make_tiny_speech_llm(tok, adaptor_norm=True, ctc_head=True, frame_policy="clip",
                                speech_input="ctc_top1", ctc_decoding=BEAM, **kw)


def _perturb(module, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_front_end_is_the_base_llm_after_the_llm_is_trained(tiny_tokenizer):
    """Full-FT changes the LLM (and its tied embeddings); the CTC table and the decoder's LM stay
    the base model's, so a clip's transcript does not move with the method being trained."""
    m = _model(tiny_tokenizer)
    states = m.encode_audio([tone(1.5, seed=s) for s in range(4)])
    before = m.clip_tokens(states)
    _perturb(m.llm)
    assert m.clip_tokens(states) == before
    # reading through the trained LLM instead would give other transcripts (the test can fail)
    ctx = user_turn_context(tiny_tokenizer)
    from omnishift.models.adaptor import ctc_logits

    table = m.llm.get_input_embeddings().weight
    drifted = []
    for s in states:
        emb = m.adaptor(s[None].float(), torch.tensor([s.shape[0]]))
        lp = ctc_logits(emb, table, m.adaptor.ctc_blank, log_scale=m.adaptor.ctc_log_scale)[0].log_softmax(-1)
        drifted.append(ctc_beam_search(lp[: s.shape[0] // m.config.k], LLMPrior(m.llm, ctx), m.beam_settings,
                                       end_token=user_turn_end(tiny_tokenizer)))
    assert drifted != before
    # the prior and the table are not parameters: never trained, saved or counted
    assert not any("prior" in n or "ctc_table" in n for n, _ in m.named_parameters())
    assert set(m.state_dict()) == {f"llm.{k}" for k in m.llm.state_dict()} | {
        f"adaptor.{k}" for k in m.adaptor.state_dict()} | {f"encoder.{k}" for k in m.encoder.state_dict()}


def test_token_cache_hits_and_keys(tiny_tokenizer, tmp_path):
    m = _model(tiny_tokenizer)
    states = m.encode_audio([tone(1.0, seed=s) for s in range(3)])
    m.use_token_cache(tmp_path)
    first = m.clip_tokens(states)
    assert (m.token_cache.hits, m.token_cache.misses) == (0, 3)
    assert len(list(tmp_path.rglob("*.json"))) == 3
    assert m.clip_tokens(states) == first and m.token_cache.hits == 3
    kept = m.token_cache
    m.use_token_cache(tmp_path)  # every evaluation unit attaches it: the identity is not hashed again
    assert m.token_cache is kept
    # an entry is used only for the adaptor that made it
    other = _model(tiny_tokenizer)
    _perturb(other.adaptor, seed=2, scale=0.5)
    other.use_token_cache(tmp_path)
    other.clip_tokens(states)
    assert (other.token_cache.hits, other.token_cache.misses) == (0, 3)
    # a torn entry is decoded again and rewritten
    f = m.token_cache.path(states[0])
    f.write_text('{"identity": "x", "tok')
    fresh = _model(tiny_tokenizer)
    fresh.use_token_cache(tmp_path)
    assert fresh.clip_tokens(states) == first and fresh.token_cache.misses == 1
    assert json.loads(f.read_text())["tokens"] == first[0]
    # greedy reading (~1 ms a clip) is never cached
    greedy = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, speech_input="ctc_top1")
    greedy.use_token_cache(tmp_path)
    assert greedy.token_cache is None


def test_transcripts_and_compressed_input_share_the_cache(tiny_tokenizer, tmp_path):
    m = _model(tiny_tokenizer)
    m.use_token_cache(tmp_path)
    states = m.encode_audio([tone(1.2)])
    text = m.ctc_transcripts(states)
    emb = m.speech_vectors(states[0])
    assert m.token_cache.hits == 1 and m.token_cache.misses == 1
    tokens = m.clip_tokens(states)[0]
    assert text == [tiny_tokenizer.decode(tokens).strip()]
    torch.testing.assert_close(emb, m.llm.get_input_embeddings().weight[torch.tensor(tokens, dtype=torch.long)])


@pytest.mark.parametrize("method", ["frozen"])
def test_training_under_token_input_refuses_adaptor_only_methods(tiny_tokenizer, tmp_path, method):
    from omnishift.train.config import config_from_dict
    from omnishift.train.trainer import train

    m = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, speech_input="ctc_top1")
    items = [{"prompt": "<speech>", "audio": tone(1.0, seed=i), "response": "yes"} for i in range(2)]
    cfg = config_from_dict({"method": {"name": method}, "out_dir": str(tmp_path / "run"),
                            "loop": {"max_steps": 1, "batch_size": 2, "progress": False}})
    with pytest.raises(ValueError, match="nothing to train"):
        train(cfg, model=m, items=items)
