"""SpeechLLM on tiny random models: text path, splice, labels, frame policies, batching, save/load."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_speech_llm, tone

from omnishift.models.processor import IGNORE_INDEX, FramePolicy, s2t_prompt, t2t_prompt


def test_text_only_equals_base_llm_exactly(tiny_speech_llm, tiny_tokenizer):
    m = tiny_speech_llm
    prompts = [t2t_prompt("What is the capital of France?"), t2t_prompt("Who wrote Hamlet?")]
    batch = m.processor([{"prompt": p} for p in prompts])
    assert "input_features" not in batch
    out = m(batch).logits
    ref = m.llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert (out - ref).abs().max().item() == 0.0
    # Unpadded single item, tokenised by the tokenizer's own chat template path.
    ids = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": prompts[0]}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    single = m.processor([{"prompt": prompts[0]}])
    assert single["input_ids"][0].tolist() == list(ids)
    base = m.llm(input_ids=torch.tensor([ids])).logits
    assert (m(single).logits - base).abs().max().item() == 0.0


def test_splice_positions_and_label_mask(tiny_speech_llm, tiny_tokenizer):
    m = tiny_speech_llm
    audio = tone(2.0)
    batch = m.processor([{"prompt": s2t_prompt(), "audio": audio, "response": "Paris."}])
    n_emb = m.processor.frame_policy.num_embeddings(len(audio))
    mask = batch["speech_mask"][0]
    pos = mask.nonzero().flatten()
    assert len(pos) == n_emb == int(batch["speech_frames"][0]) // 5
    assert (pos.diff() == 1).all(), "speech slots must be contiguous"
    # The slots sit exactly where '<speech>' stood in the templated prompt.
    head = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": s2t_prompt()}], tokenize=False, add_generation_prompt=True
    )
    before = tiny_tokenizer(head.split("<speech>")[0], add_special_tokens=False)["input_ids"]
    assert pos[0].item() == len(before)
    assert batch["input_ids"][0, : len(before)].tolist() == before
    # Labels: only the response and its end-of-turn.
    labels = batch["labels"][0]
    supervised = labels[labels != IGNORE_INDEX]
    assert tiny_tokenizer.decode(supervised) == "Paris.<|im_end|>\n"
    first = (labels != IGNORE_INDEX).nonzero()[0].item()
    assert (labels[:first] == IGNORE_INDEX).all() and not mask[first:].any()
    # Embeddings at the slots equal the adaptor applied to this clip's kept encoder frames.
    embeds = m.input_embeddings(batch)[0]
    with torch.no_grad():
        frames = m.encoder(batch["input_features"]).last_hidden_state[:, : batch["speech_frames"][0]]
        expected = m.adaptor(frames)[0]
    assert torch.allclose(embeds[mask], expected, atol=0, rtol=0)
    tok_emb = m.llm.get_input_embeddings()(batch["input_ids"][0])
    assert torch.equal(embeds[~mask], tok_emb[~mask])


def test_frame_policy_counts():
    trim, pad = FramePolicy("trim"), FramePolicy("pad30")
    three_s = 3 * 16000
    assert trim.num_embeddings(three_s) <= 40
    assert trim.num_embeddings(three_s) * 5 >= 150, "trim must cover the whole clip"
    assert pad.num_embeddings(three_s) == 300
    assert trim.num_embeddings(30 * 16000) == 300, "trim never exceeds the 30 s window"
    with pytest.raises(ValueError, match="unknown"):
        FramePolicy("crop")


@pytest.mark.parametrize("policy", ["trim", "pad30"])
def test_batched_speech_matches_single_items(tiny_tokenizer, policy):
    m = make_tiny_speech_llm(tiny_tokenizer, frame_policy=policy)
    items = [
        {"prompt": s2t_prompt(), "audio": tone(1.0, seed=1), "response": "One."},
        {"prompt": s2t_prompt(), "audio": tone(3.0, seed=2), "response": "Three seconds."},
        {"prompt": t2t_prompt("A text question?"), "response": "Text."},
    ]
    batch = m.processor(items)
    expected_slots = 300 if policy == "pad30" else None
    counts = batch["speech_mask"].sum(1).tolist()
    if expected_slots:
        assert counts == [300, 300, 0]
    else:
        assert counts[0] < counts[1] <= 40 and counts[2] == 0
    with torch.no_grad():
        logits = m(batch).logits
        for i, item in enumerate(items):
            single = m.processor([item])
            ref = m(single).logits[0]
            n = ref.shape[0]
            assert torch.allclose(logits[i, :n], ref, atol=1e-5), f"item {i} differs when batched"


def test_loss_trains_adaptor_and_llm_not_encoder(tiny_speech_llm):
    m = tiny_speech_llm
    batch = m.processor([{"prompt": s2t_prompt(), "audio": tone(1.5), "response": "Yes."}])
    loss = m(batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert m.adaptor.linear1.weight.grad is not None and m.adaptor.linear1.weight.grad.abs().sum() > 0
    assert m.llm.model.layers[0].self_attn.q_proj.weight.grad is not None
    assert all(p.grad is None for p in m.encoder.parameters())


def test_placeholder_mismatch_is_a_clear_error(tiny_speech_llm):
    with pytest.raises(ValueError, match="item 0: prompt has 0"):
        tiny_speech_llm.processor([{"prompt": "no placeholder", "audio": tone(1.0)}])
    with pytest.raises(ValueError, match="item 1: prompt has 1"):
        tiny_speech_llm.processor([{"prompt": "ok"}, {"prompt": s2t_prompt()}])


def test_batched_generation_equals_one_at_a_time(tiny_speech_llm):
    m = tiny_speech_llm
    prompts = [s2t_prompt(), t2t_prompt("Q?"), s2t_prompt()]
    audios = [tone(1.0, seed=3), None, tone(2.5, seed=4)]
    batched = m.answer(prompts, audios, max_new_tokens=6)
    single = [m.answer([p], [a], max_new_tokens=6)[0] for p, a in zip(prompts, audios)]
    assert batched == single
