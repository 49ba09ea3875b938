"""CTC prefix beam search with the LLM as LM: checked against brute-force enumeration of CTC paths."""

import itertools
import math

import pytest
import torch

from omnishift.models.ctc_decode import (BeamSettings, LLMPrior, beam_settings, ctc_beam_search, user_turn_context,
                                         user_turn_end)
from tests.tiny_models import make_tiny_llm, make_tiny_speech_llm, tone


def _collapse(path):
    out = []
    for i, c in enumerate(path):
        if c != 0 and (i == 0 or c != path[i - 1]):
            out.append(c - 1)
    return tuple(out)


def _label_log_probs(logp: torch.Tensor) -> dict:
    """log P(y | x) of every label sequence, summing all T-step paths that collapse to it."""
    totals = {}
    T, C = logp.shape
    for path in itertools.product(range(C), repeat=T):
        lp = sum(float(logp[t, c]) for t, c in enumerate(path))
        y = _collapse(path)
        totals[y] = math.log(math.exp(totals[y]) + math.exp(lp)) if y in totals else lp
    return totals


class _FixedPrior:
    """A prior whose next-token log-probs depend only on the last token (or on the empty prefix)."""

    def __init__(self, table):
        self.table = table

    def fill(self, prefixes):
        pass

    def __call__(self, prefix):
        return self.table[prefix[-1] if prefix else -1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_without_lm_finds_the_most_probable_label_sequence(seed):
    torch.manual_seed(seed)
    logp = (torch.randn(4, 4) * 2).log_softmax(-1)  # T=4 frames, blank + 3 tokens
    totals = _label_log_probs(logp)
    best = max(totals, key=totals.get)
    settings = BeamSettings(beam=100, token_top_k=3, token_min_logp=-1e9, lm_weight=0.0, length_bonus=0.0)
    assert tuple(ctc_beam_search(logp, None, settings)) == best


def test_greedy_path_and_label_sequence_can_differ():
    """The case prefix search exists for: two frames split between 'a' and blank. Best path is
    blank-blank (0.36) but 'a' collects 0.64 over three paths."""
    p = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    settings = BeamSettings(beam=4, token_top_k=1, token_min_logp=-1e9, lm_weight=0.0, length_bonus=0.0)
    assert ctc_beam_search(p, None, settings) == [0]
    totals = _label_log_probs(p)
    assert math.isclose(math.exp(totals[(0,)]), 0.64, rel_tol=1e-6)


def test_lm_weight_breaks_acoustic_ties_towards_the_likely_word():
    # one frame, tokens 0 and 1 acoustically equal; the LM prefers token 1 at the start
    logp = torch.tensor([[-5.0, math.log(0.5), math.log(0.5)]]).log_softmax(-1)
    lm = {-1: torch.tensor([math.log(0.1), math.log(0.9)])}
    off = BeamSettings(beam=4, token_top_k=2, token_min_logp=-1e9, lm_weight=0.0, length_bonus=0.0, eos_weight=0.0)
    on = BeamSettings(beam=4, token_top_k=2, token_min_logp=-1e9, lm_weight=1.0, length_bonus=0.0, eos_weight=0.0)
    assert ctc_beam_search(logp, _FixedPrior(lm), off) in ([0], [1])
    assert ctc_beam_search(logp, _FixedPrior(lm), on) == [1]
    lm_other = {-1: torch.tensor([math.log(0.9), math.log(0.1)])}
    assert ctc_beam_search(logp, _FixedPrior(lm_other), on) == [0]


def test_repeated_token_needs_a_blank_between():
    # frames say a, a, blank, a: the label sequence is (a, a), never (a, a, a)
    big = 0.0
    logp = torch.tensor([[-9, big, -9], [-9, big, -9], [big, -9, -9], [-9, big, -9]], dtype=torch.float).log_softmax(-1)
    settings = BeamSettings(beam=8, token_top_k=2, token_min_logp=-1e9, lm_weight=0.0, length_bonus=0.0)
    assert ctc_beam_search(logp, None, settings) == [0, 0]


def test_llm_prior_batched_left_padding_matches_single_forward():
    llm = make_tiny_llm(40, 0).eval()
    prior = LLMPrior(llm, [1, 2])
    prior.fill([(5,), (5, 7, 9), ()])
    with torch.no_grad():
        for p in [(5,), (5, 7, 9), ()]:
            ref = llm(input_ids=torch.tensor([[1, 2, *p]])).logits[0, -1].float().log_softmax(-1)
            torch.testing.assert_close(prior(p), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eos_weight_adds_the_end_of_turn_log_probability_of_each_full_hypothesis(seed):
    """Brute force: with every hypothesis kept, the pick is argmax_y log P_ctc(y) + e * log P_end(y)."""
    torch.manual_seed(seed)
    logp = (torch.randn(4, 4) * 2).log_softmax(-1)  # T=4 frames, blank + 3 tokens
    end = 3  # the end-of-turn token, never emitted acoustically here
    table = {k: (torch.randn(4) * 3).log_softmax(-1) for k in (-1, 0, 1, 2)}  # next-token log-probs by last token
    totals = _label_log_probs(logp)
    settings = BeamSettings(beam=100, token_top_k=3, token_min_logp=-1e9, lm_weight=0.0, length_bonus=0.0, eos_weight=2.0)
    prior = _FixedPrior(table)
    best = max(totals, key=lambda y: totals[y] + 2.0 * float(prior(y)[end]))
    assert tuple(ctc_beam_search(logp, prior, settings, end_token=end)) == best


def test_eos_weight_keeps_a_question_from_stopping_before_its_last_word():
    # frames: token 0 surely, then token 1 or blank at even odds; the LM says a turn cannot end after 0
    logp = torch.tensor([[-9.0, 0.0, -9.0, -9.0], [0.0, -9.0, 0.0, -9.0]]).log_softmax(-1)
    table = {-1: torch.tensor([0.0, -9.0, -9.0, -9.0]), 0: torch.tensor([-9.0, 0.0, -9.0, -9.0]),
             1: torch.tensor([-9.0, -9.0, -9.0, 0.0])}
    end = 3
    off = BeamSettings(beam=4, token_top_k=3, token_min_logp=-1e9, lm_weight=0.0, length_bonus=-0.5, eos_weight=0.0)
    on = BeamSettings(beam=4, token_top_k=3, token_min_logp=-1e9, lm_weight=0.0, length_bonus=-0.5, eos_weight=1.0)
    assert ctc_beam_search(logp, _FixedPrior(table), off) == [0]
    assert ctc_beam_search(logp, _FixedPrior(table), on, end_token=end) == [0, 1]
    with pytest.raises(ValueError, match="end-of-turn"):
        ctc_beam_search(logp, _FixedPrior(table), on)


def test_user_turn_end_is_the_token_after_the_users_words(tiny_tokenizer):
    assert user_turn_end(tiny_tokenizer) == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_settings_are_validated():
    assert beam_settings(None) is None
    assert beam_settings({"beam": 4}).beam == 4
    with pytest.raises(ValueError, match="unknown keys"):
        beam_settings({"beam_size": 4})
    with pytest.raises(ValueError, match="beam"):
        BeamSettings(beam=0)
    with pytest.raises(ValueError, match="lm_weight"):
        BeamSettings(lm_weight=-1)
    with pytest.raises(ValueError, match="eos_weight"):
        BeamSettings(eos_weight=-1)


def test_user_turn_context_falls_back_to_bos(tiny_tokenizer):
    ids = user_turn_context(tiny_tokenizer)
    assert len(ids) >= 1 and all(isinstance(i, int) for i in ids)


def test_speech_llm_reads_the_ctc_path_with_beam_search(tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="clip",
                             speech_input="ctc_top1", ctc_decoding={"beam": 4, "lm_weight": 0.5})
    states = m.encode_audio([tone(1.0)])
    logp = next(m.ctc_log_probs(states))
    prior = LLMPrior(m.llm, user_turn_context(tiny_tokenizer))
    tokens = ctc_beam_search(logp, prior, m.beam_settings, end_token=user_turn_end(tiny_tokenizer))
    assert m.beam_settings.eos_weight == 0.5 and m.ctc_tokens(logp) == tokens  # the validated default
    table = m.llm.get_input_embeddings().weight
    torch.testing.assert_close(m.speech_vectors(states[0]), table[torch.tensor(tokens, dtype=torch.long)])
    assert m.ctc_transcripts(states) == [tiny_tokenizer.decode(tokens).strip()]
    m.beam_settings = BeamSettings(beam=4, lm_weight=0.5, eos_weight=1.0)  # the model hands the beam its end token
    assert m.ctc_tokens(logp) == ctc_beam_search(logp, prior, m.beam_settings, end_token=user_turn_end(tiny_tokenizer))
    with pytest.raises(ValueError, match="ctc_top1"):
        make_tiny_speech_llm(tiny_tokenizer, ctc_head=True, speech_input="ctc_soft", ctc_decoding={"beam": 4})
    with pytest.raises(ValueError, match="unknown keys"):
        make_tiny_speech_llm(tiny_tokenizer, ctc_head=True, speech_input="ctc_top1", ctc_decoding={"beams": 4})


def test_ctc_log_probs_are_streamed(tiny_tokenizer):
    """A dev set's log-probabilities over 49k classes held at once took 10 GB (an align run was
    killed for memory at its first dev evaluation): they are yielded 32 clips at a time."""
    import inspect

    m = make_tiny_speech_llm(tiny_tokenizer, ctc_head=True, frame_policy="clip")
    states = m.encode_audio([tone(0.5), tone(1.0, seed=1)])
    gen = m.ctc_log_probs(states)
    assert inspect.isgenerator(gen)
    got = list(gen)
    assert [g.shape[0] for g in got] == [s.shape[0] // m.config.k for s in states]
    torch.testing.assert_close(got[0].exp().sum(-1), torch.ones(got[0].shape[0]))
