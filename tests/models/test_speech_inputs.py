"""The speech-input readings: CTC segments, what fills the slots, and where the gradient goes."""

from __future__ import annotations

import pytest
import torch

from omnishift.models.adaptor import ctc_logits
from omnishift.models.processor import s2t_prompt
import itertools

from omnishift.models.speech_inputs import SPEECH_INPUTS, forced_spans, greedy_segments
from tiny_models import make_tiny_speech_llm, tone


def _logp(path: list[int], classes: int = 8) -> torch.Tensor:
    """Log-probabilities whose argmax walks ``path`` (class 0 = blank)."""
    x = torch.full((len(path), classes), -5.0)
    x[torch.arange(len(path)), torch.tensor(path)] = 0.0
    return x.log_softmax(-1)


def test_greedy_segments_by_hand():
    plan = greedy_segments(_logp([0, 3, 3, 0, 5, 5, 5, 3, 0, 0]))
    assert plan.tokens.tolist() == [2, 4, 2]  # class j + 1 is token j
    assert plan.spans.tolist() == [[1, 3], [4, 7], [7, 8]]
    empty = greedy_segments(_logp([0, 0, 0]))
    assert empty.tokens.numel() == 0 and empty.spans.shape == (0, 2)


def _collapse(path) -> list[int]:
    return [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]


def _best_path_by_enumeration(logp: torch.Tensor, classes: list[int]) -> list[int]:
    """The most likely frame path (over every path of T frames) that collapses to ``classes``."""
    t, c = logp.shape
    paths = [p for p in itertools.product(range(c), repeat=t) if _collapse(p) == classes]
    return list(max(paths, key=lambda p: float(logp[torch.arange(t), torch.tensor(p)].sum())))


def test_forced_spans_follow_the_best_path_that_emits_the_tokens():
    gen = torch.Generator().manual_seed(0)
    for tokens in ([1], [1, 2], [1, 1], [2, 0, 2]):
        logp = torch.randn(6, 4, generator=gen).mul(2).log_softmax(-1)  # 6 frames, blank + 3 tokens
        path = _best_path_by_enumeration(logp, [t + 1 for t in tokens])
        want, i = [], 0
        for f, cls in enumerate(path):  # spans of the token states along the path
            if cls != 0 and (f == 0 or cls != path[f - 1] or path[f - 1] == 0):
                want.append([f, f + 1])
            elif cls != 0:
                want[-1][1] = f + 1
        assert forced_spans(logp, torch.tensor(tokens)).tolist() == want, (tokens, path)


def test_forced_spans_of_the_greedy_tokens_are_the_greedy_segments():
    logp = _logp([0, 3, 3, 0, 5, 5, 5, 3, 0, 0])
    plan = greedy_segments(logp)
    assert forced_spans(logp, plan.tokens).tolist() == plan.spans.tolist()
    # a token the argmax never says still gets the frames where it is most likely
    spans = forced_spans(logp, torch.tensor([2, 6, 4, 2]))
    assert spans.shape == (4, 2) and bool((spans[:, 1] > spans[:, 0]).all())
    assert bool((spans[1:, 0] >= spans[:-1, 1]).all())  # in order, not overlapping
    with pytest.raises(ValueError, match="no CTC path"):
        forced_spans(logp[:2], torch.tensor([1, 1, 1]))  # 3 tokens (2 repeats) need 5 frames


def _model(tok, reading: str, **opts):
    m = make_tiny_speech_llm(tok, adaptor_norm=True, ctc_head=True, frame_policy="clip", speech_input=reading,
                             speech_options=opts or None)
    with torch.no_grad():  # the blank never wins, so every clip has segments
        m.adaptor.ctc_blank.zero_()
        m.adaptor.ctc_blank[-1] = -1e4
    return m


def _frame_outputs(m, clip):
    states = m.encode_audio([clip])[0]
    with torch.no_grad():
        emb = m.adaptor(states[None])[0]  # T', H
        logits = ctc_logits(emb, m.ctc_table(), m.adaptor.ctc_blank, log_scale=m.adaptor.ctc_log_scale)
    return states, emb, logits


def test_soft_is_the_posterior_mix_per_segment_and_no_token_row(tiny_tokenizer):
    m = _model(tiny_tokenizer, "ctc_soft", temperature=0.7)
    clip = tone(1.2)
    states, emb, logits = _frame_outputs(m, clip)
    plan = greedy_segments(logits.log_softmax(-1))
    rows = m.llm.get_input_embeddings().weight
    want = torch.stack([(logits[s:e, 1:] / 0.7).softmax(-1).mean(0) @ rows for s, e in plan.spans.tolist()])
    got = m.speech_vectors(clip)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    gap = torch.cdist(got, rows).min(-1).values  # distance to the nearest token row
    assert bool((gap > 1e-3).all())  # continuous vectors, not rows looked up by id


def test_soft_at_low_temperature_reads_the_greedy_tokens(tiny_tokenizer):
    cold = _model(tiny_tokenizer, "ctc_soft", temperature=1e-4)
    top1 = _model(tiny_tokenizer, "ctc_top1")
    states = cold.encode_audio([tone(1.0)])[0]
    torch.testing.assert_close(cold.speech_vectors(states), top1.speech_vectors(states), rtol=0, atol=1e-5)


def test_peak_is_the_mean_adaptor_output_per_segment(tiny_tokenizer):
    m = _model(tiny_tokenizer, "ctc_peak")
    clip = tone(0.9, freq=330.0)
    _, emb, logits = _frame_outputs(m, clip)
    plan = greedy_segments(logits.log_softmax(-1))
    want = torch.stack([emb[s:e].mean(0) for s, e in plan.spans.tolist()])
    torch.testing.assert_close(m.speech_vectors(clip), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["ctc_soft", "ctc_peak"])
def test_batched_slots_equal_one_clip_at_a_time(tiny_tokenizer, name):
    m = _model(tiny_tokenizer, name)
    clips = [tone(0.6, seed=1), tone(1.4, freq=150.0, seed=2), tone(1.0, freq=500.0, seed=3)]
    batch = m.processor([{"prompt": s2t_prompt(), "audio": c} for c in clips], padding_side="right")
    together = m.speech_embeddings(batch)
    alone = torch.cat([m.speech_vectors(c) for c in clips])
    assert int(batch["speech_mask"].sum()) == together.shape[0] == int(batch["speech_slots"].sum())
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["ctc_soft", "ctc_peak", "ctc_top1", "ctc_soft_beam"])
def test_the_llm_loss_reaches_the_adaptor_only_through_a_differentiable_reading(tiny_tokenizer, name):
    m = _model(tiny_tokenizer, name)
    m.train()
    batch = m.processor([{"prompt": s2t_prompt(), "audio": tone(1.0), "response": "a tone"}], padding_side="right")
    m(batch).loss.backward()
    grads = {n: p.grad for n, p in m.adaptor.named_parameters() if n in ("linear1.weight", "linear2.weight")}
    moved = all(g is not None and float(g.abs().sum()) > 0 for g in grads.values())
    assert moved == SPEECH_INPUTS[name].differentiable


def test_soft_beam_pools_the_forced_aligned_frames_of_the_beam_tokens(tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="clip",
                             speech_input="ctc_soft_beam", ctc_decoding={"beam": 3, "lm_weight": 0.5})
    with torch.no_grad():  # the blank never wins, so every clip has segments
        m.adaptor.ctc_blank.zero_()
        m.adaptor.ctc_blank[-1] = -1e4
    clip = tone(1.1, seed=4)
    states, emb, logits = _frame_outputs(m, clip)
    tokens = torch.tensor(m.clip_tokens([states])[0])
    spans = forced_spans(logits.log_softmax(-1), tokens)
    rows = m.llm.get_input_embeddings().weight
    want = torch.stack([logits[s:e, 1:].softmax(-1).mean(0) @ rows for s, e in spans.tolist()])
    torch.testing.assert_close(m.speech_vectors(states), want, rtol=1e-4, atol=1e-5)
    assert m.speech_plan(states)[1].tokens.tolist() == tokens.tolist()


def test_prior_mixes_the_planned_token_row_into_the_soft_vector_and_keeps_the_gradient(tiny_tokenizer):
    soft, fused = _model(tiny_tokenizer, "ctc_soft", temperature=0.7), _model(tiny_tokenizer, "ctc_soft",
                                                                               temperature=0.7, prior=0.6)
    fused.load_state_dict(soft.state_dict())
    states = soft.encode_audio([tone(1.2)])[0]
    tokens = soft.speech_plan(states)[1].tokens
    rows = soft.llm.get_input_embeddings().weight
    with torch.no_grad():
        want = 0.4 * soft.speech_vectors(states) + 0.6 * rows[tokens]
        torch.testing.assert_close(fused.speech_vectors(states), want, rtol=1e-4, atol=1e-5)
    fused.train()
    batch = fused.processor([{"prompt": s2t_prompt(), "audio": tone(1.2), "response": "a tone"}],
                            padding_side="right")
    fused(batch).loss.backward()
    assert float(fused.adaptor.linear1.weight.grad.abs().sum()) > 0
    for bad, match in (({"prior": 1.0}, "ctc_top1"), ({"temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=match):
            _model(tiny_tokenizer, "ctc_soft", **bad)


def test_beam_settings_need_a_token_reading(tiny_tokenizer):
    with pytest.raises(ValueError, match="picks tokens"):
        make_tiny_speech_llm(tiny_tokenizer, ctc_head=True, speech_input="ctc_soft", ctc_decoding={"beam": 2})
    with pytest.raises(ValueError, match="temperatur"):
        make_tiny_speech_llm(tiny_tokenizer, ctc_head=True, speech_input="ctc_soft",
                             speech_options={"temprature": 0.5})
    with pytest.raises(ValueError, match="unknown"):
        make_tiny_speech_llm(tiny_tokenizer, ctc_head=True, speech_input="ctc_nearest")


def test_answers_are_generated_without_a_graph(tiny_tokenizer):
    """A differentiable reading under generation must build no autograd graph: the KV cache outlives
    every item, so a graph through it keeps every clip's posteriors alive (an evaluation ran out of memory)."""
    m = _model(tiny_tokenizer, "ctc_soft")
    seen = []
    m.llm.register_forward_hook(lambda mod, args, out: seen.append(torch.is_grad_enabled()))
    items = [{"prompt": s2t_prompt(), "audio": tone(0.8, seed=s)} for s in range(3)]
    answers = list(m.generate_stream(items, slots=2, max_new_tokens=3))
    assert len(answers) == 3 and seen and not any(seen)
