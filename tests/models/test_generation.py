"""Greedy decoding with early-finished rows dropped, and with continuous batching (finished slots
refilled) == one at a time == transformers' generate."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_speech_llm, tone

from omnishift.models.generation import continuous_greedy_generate, eos_token_ids, greedy_generate
from omnishift.models.processor import s2t_prompt

PROMPTS = ["What is two plus two?", "Name a color", "Who wrote Hamlet, the play, and when?", "Hi?", "Capital of Peru?"]


def _reference(m, items, n, eos):
    """transformers' own greedy generate, one item at a time (no padding anywhere), cut at the first EOS."""
    out = []
    for it in items:
        b = m.processor([it], padding_side="left")
        kw = dict(attention_mask=b["attention_mask"], max_new_tokens=n, do_sample=False,
                  pad_token_id=m.tokenizer.pad_token_id)
        if "speech_frames" in b:
            ids = m.llm.generate(inputs_embeds=m.input_embeddings(b), **kw)[0].tolist()
        else:
            ids = m.llm.generate(input_ids=b["input_ids"], **kw)[0, b["input_ids"].shape[1]:].tolist()
        out.append(ids[:min([ids.index(e) for e in eos if e in ids], default=len(ids))])
    return out


@pytest.fixture()
def varied(tiny_tokenizer):
    """A tiny model with larger random weights, so answers vary, and token 20 as a second EOS, so
    rows finish at different steps (text rows after 5, 7 and 12 tokens; speech rows after 1 and 4)."""
    m = make_tiny_speech_llm(tiny_tokenizer, seed=1)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.llm.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
        for p in m.adaptor.parameters():
            p.mul_(20)
    m.llm.generation_config.eos_token_id = [2, 20]
    return m


def _items(speech):
    if speech:
        return [{"prompt": s2t_prompt(), "audio": tone(0.2 + 0.15 * i, seed=i, freq=150 + 100 * i)} for i in range(5)]
    return [{"prompt": p} for p in PROMPTS]


@pytest.mark.parametrize("speech", [False, True])
def test_batched_equals_one_at_a_time_and_generate(varied, speech):
    m, items = varied, _items(speech)
    eos = eos_token_ids(m.llm, m.tokenizer)
    assert eos == {2, 20}
    ref = _reference(m, items, 12, eos)
    assert len({len(r) for r in ref}) > 1, "rows must finish at different steps for this test to mean anything"
    b = m.processor(items, padding_side="left")
    prompt = {"inputs_embeds": m.input_embeddings(b)} if speech else {"input_ids": b["input_ids"]}
    assert greedy_generate(m.llm, b["attention_mask"], 12, eos, **prompt) == ref
    batched = m.generate(b, max_new_tokens=12)
    single = [m.generate(m.processor([it], padding_side="left"), max_new_tokens=12)[0] for it in items]
    assert batched == single == [m.tokenizer.decode(r, skip_special_tokens=True).strip() for r in ref]


def test_rows_leave_the_batch(varied):
    m = varied
    b = m.processor([{"prompt": p} for p in PROMPTS], padding_side="left")
    sizes = []
    hook = m.llm.model.register_forward_pre_hook(lambda mod, a, kw: sizes.append(kw["input_ids"].shape[0]),
                                                 with_kwargs=True)
    try:
        ids = greedy_generate(m.llm, b["attention_mask"], 12, {2, 20}, input_ids=b["input_ids"])
    finally:
        hook.remove()
    # one forward per step (prefill + 11); the batch shrinks exactly when rows finish
    still = [sum(len(x) > s for x in ids) for s in range(12)]  # rows still running after step s
    assert sizes == [5] + still[:11] and sizes[-1] < 5


def test_bad_batches_fail_clearly(varied):
    m = varied
    b = m.processor([{"prompt": p} for p in PROMPTS[:2]], padding_side="right")
    with pytest.raises(ValueError, match="left-padded"):
        greedy_generate(m.llm, b["attention_mask"], 3, {2}, input_ids=b["input_ids"])
    with pytest.raises(ValueError, match="exactly one"):
        greedy_generate(m.llm, b["attention_mask"], 3, {2})


MORE = PROMPTS + ["Why is the sky blue?", "Two words", "Count to five please, slowly", "Ok", "Largest ocean on Earth?"]


def _speech_items(n=8):
    """Speech items whose answers end after 1, 4 and 12 (the cap) tokens."""
    return [{"prompt": s2t_prompt(), "audio": tone(0.2 + 0.15 * i, seed=i, freq=150 + 100 * i)} for i in range(n)]


def _mixed_items():
    """Text and speech items interleaved, more than any slot count used below."""
    return [x for pair in zip([{"prompt": p} for p in MORE[:6]], _speech_items(6)) for x in pair] + \
        [{"prompt": p} for p in MORE[6:]]


def _prefill(m, items):
    def prefill(idx):
        b = m.processor([items[i] for i in idx], padding_side="left")
        if "speech_frames" in b:
            return {"attention_mask": b["attention_mask"], "inputs_embeds": m.input_embeddings(b)}
        return {"attention_mask": b["attention_mask"], "input_ids": b["input_ids"]}
    return prefill


def _continuous(m, items, slots, n, eos):
    got = list(continuous_greedy_generate(m.llm, _prefill(m, items), len(items), slots, n, eos))
    assert sorted(i for i, _ in got) == list(range(len(items))), "every item exactly once"
    return got


@pytest.mark.parametrize("kind", ["text", "speech", "mixed"])
def test_continuous_equals_one_at_a_time_and_generate(varied, kind):
    m = varied
    items = {"text": [{"prompt": p} for p in MORE], "speech": _speech_items(), "mixed": _mixed_items()}[kind]
    eos = eos_token_ids(m.llm, m.tokenizer)
    ref = _reference(m, items, 12, eos)
    assert len({len(r) for r in ref}) > 2 and max(map(len, ref)) == 12, "items must finish at different steps"
    # one-at-a-time through the static loop agrees with generate
    single = []
    for it in items:
        p = _prefill(m, [it])([0])
        single.append(greedy_generate(m.llm, p.pop("attention_mask"), 12, eos, **p)[0])
    assert single == ref
    for slots in (1, 2, 3, len(items) + 4):  # more items than slots ... more slots than items
        got = _continuous(m, items, slots, 12, eos)
        assert dict(got) == dict(enumerate(ref)), f"slots={slots}"
        if slots == 1:  # one slot: index order; with more, short answers overtake long ones
            assert [i for i, _ in got] == list(range(len(items)))
    streamed = dict(m.generate_stream(items, slots=3, max_new_tokens=12))
    assert streamed == {i: m.tokenizer.decode(r, skip_special_tokens=True).strip() for i, r in enumerate(ref)}


def test_continuous_refills_finished_slots(varied):
    m = varied
    items = [{"prompt": p} for p in MORE]
    eos = eos_token_ids(m.llm, m.tokenizer)
    calls = []  # (rows, tokens per row) of every forward
    hook = m.llm.model.register_forward_pre_hook(lambda mod, a, kw: calls.append(tuple(kw["input_ids"].shape)),
                                                 with_kwargs=True)
    try:
        got = dict(_continuous(m, items, 3, 12, eos))
    finally:
        hook.remove()
    steps = [rows for rows, t in calls if t == 1]
    prefills = [rows for rows, t in calls if t > 1]
    assert max(steps) == 3 and sum(prefills) == len(items), "never more than 3 in flight; each item prefilled once"
    assert len(prefills) > 1, "slots were refilled while others were running"
    # decoding steps: one per token after each item's first (from its prefill) ...
    assert sum(steps) == sum(max(len(r) + (len(r) < 12) - 1, 0) for r in got.values())
    # ... and far fewer steps than static batches of 3, which each run as long as their longest answer
    static = sum(max(min(len(got[i]) + 1, 12) for i in range(s, min(s + 3, len(items)))) - 1 for s in range(0, 10, 3))
    assert len(steps) < static


def test_continuous_edge_cases(varied):
    m = varied
    items = [{"prompt": p} for p in MORE]
    eos = eos_token_ids(m.llm, m.tokenizer)
    ref = _reference(m, items, 12, eos)
    # an item whose very first token is an end-of-sequence token finishes at its prefill
    first = ref[3][0]
    eos2 = eos | {first}
    ref2 = _reference(m, items, 12, eos2)
    assert ref2[3] == [] and any(ref2)
    assert dict(_continuous(m, items, 2, 12, eos2)) == dict(enumerate(ref2))
    # max_new_tokens 1 (every item ends at its prefill) and 0
    assert dict(_continuous(m, items, 4, 1, eos)) == {i: r[:1] for i, r in enumerate(ref)}
    assert dict(_continuous(m, items, 4, 0, eos)) == {i: [] for i in range(len(items))}
    assert list(continuous_greedy_generate(m.llm, _prefill(m, items), 0, 4, 12, eos)) == []
    with pytest.raises(ValueError, match="slots"):
        list(continuous_greedy_generate(m.llm, _prefill(m, items), 3, 0, 12, eos))
    def right(idx):
        b = m.processor([items[i] for i in idx], padding_side="right")
        return {"attention_mask": b["attention_mask"], "input_ids": b["input_ids"]}

    with pytest.raises(ValueError, match="left-padded"):
        list(continuous_greedy_generate(m.llm, right, 3, 3, 12, eos))
