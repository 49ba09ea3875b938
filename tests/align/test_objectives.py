"""Alignment objectives against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import torch
from tiny_models import make_tiny_speech_llm

from omnishift.align.objectives import OBJECTIVES, CTCOptions, KDOptions, ctc_loss, kd_loss, prepare_kd
from omnishift.models.adaptor import FrameStackAdaptor, ctc_logits, ctc_scale_init


def test_ctc_logits_are_embedding_dot_products_and_a_blank():
    emb = torch.randn(2, 3, 4)
    table = torch.randn(5, 4)
    blank = torch.randn(5)
    out = ctc_logits(emb, table, blank)
    assert out.shape == (2, 3, 6)
    torch.testing.assert_close(out[1, 2, 0], emb[1, 2] @ blank[:4] + blank[4])
    torch.testing.assert_close(out[0, 1, 3], emb[0, 1] @ table[2])
    sub = ctc_logits(emb, table, blank, vocab=torch.tensor([4, 1]))
    torch.testing.assert_close(sub[..., 1:], out[..., [5, 2]])
    scaled = ctc_logits(emb, table, blank, log_scale=torch.tensor(math.log(3.0)))
    torch.testing.assert_close(scaled[..., 1:], 3 * out[..., 1:])
    torch.testing.assert_close(scaled[..., 0], out[..., 0])


def test_ctc_scale_makes_a_token_row_score_ten_against_itself():
    table = torch.randn(50, 8) * 0.02
    scale = ctc_scale_init(table)
    assert abs(scale * float(table.pow(2).sum(-1).mean()) - 10.0) < 1e-4


def test_adaptor_norm_starts_at_the_embedding_scale():
    a = FrameStackAdaptor(8, 6, k=2, hidden=16, norm_scale=0.136)
    y = a(torch.randn(3, 10, 8) * 5)  # 3, 5, 6
    torch.testing.assert_close(y.pow(2).mean(-1).sqrt(), torch.full((3, 5), 0.136), rtol=1e-4, atol=1e-5)
    assert FrameStackAdaptor(8, 6, k=2, hidden=16).norm is None  # LLaMA-Omni's plain MLP stays available
    assert set(FrameStackAdaptor(8, 6, 2, 16).state_dict()) == {"linear1.weight", "linear1.bias", "linear2.weight",
                                                               "linear2.bias"}


def test_adaptor_context_layers_ignore_padding_and_see_neighbours():
    torch.manual_seed(0)
    a = FrameStackAdaptor(8, 64, k=2, hidden=16, norm_scale=0.136, layers=2).eval()
    short, long = torch.randn(6, 8), torch.randn(10, 8)
    padded = torch.zeros(2, 10, 8)
    padded[0, :6], padded[1] = short, long
    batch = a(padded, torch.tensor([6, 10]))  # 2, 5, 64
    alone = a(short[None])[0]  # 3, 64
    torch.testing.assert_close(batch[0, :3], alone, rtol=1e-5, atol=1e-6)  # padding is not attended to
    torch.testing.assert_close(batch[1], a(long[None])[0], rtol=1e-5, atol=1e-6)
    changed = short.clone()
    changed[4:] += 1.0  # only the third 2-frame stack changes ...
    out = a(changed[None])[0]
    assert not torch.allclose(out[0], alone[0], atol=1e-4)  # ... yet the first embedding moves (context)
    assert FrameStackAdaptor(8, 64, k=2, hidden=16, layers=0).context is None  # 0: LLaMA-Omni's plain MLP


def _model(tok, **kw):
    return make_tiny_speech_llm(tok, adaptor_norm=True, ctc_head=True, frame_policy="clip", **kw)


def test_ctc_loss_equals_the_hand_summed_paths(tiny_tokenizer):
    """Two embeddings, one target token t: the paths are (t,t), (t,-), (-,t)."""
    m = _model(tiny_tokenizer, k=1)
    m.adaptor.eval()
    states = torch.randn(2, 16)  # 2 frames -> 2 embeddings (k = 1)
    t = 7
    loss, n = ctc_loss(m, [{"encoder_states": states, "ctc_targets": [t]}], CTCOptions())
    with torch.no_grad():
        emb = m.adaptor(states[None])[0]  # 2, H
        p = ctc_logits(emb, m.llm.get_input_embeddings().weight, m.adaptor.ctc_blank,
                       log_scale=m.adaptor.ctc_log_scale).softmax(-1)  # 2, 1 + V
    pt, pb = p[:, t + 1], p[:, 0]
    want = -math.log(float(pt[0] * pt[1] + pt[0] * pb[1] + pb[0] * pt[1]))
    assert n == 1
    assert abs(loss.item() - want) < 1e-4


def test_kd_loss_is_zero_for_the_students_own_distribution_and_positive_otherwise(tiny_tokenizer):
    m = _model(tiny_tokenizer)
    item = {"encoder_states": torch.randn(20, 16), "text": "hi"}
    opts = KDOptions(temperature=2.0, top_k=len(tiny_tokenizer), max_response_tokens=5)
    prepare_kd(m, [item], opts, progress=False)
    assert isinstance(item["kd_response"], str) and item["kd_top_idx"].shape[1] == len(tiny_tokenizer)
    loss, n = kd_loss(m, [item], opts)
    assert n == min(5, item["kd_top_idx"].shape[0]) and float(loss) > 0
    # teacher := the student's own distribution (full support) -> KL is 0 up to fp16 storage
    from omnishift.models.processor import IGNORE_INDEX, s2t_prompt

    with torch.no_grad():
        batch = m.processor([{"prompt": s2t_prompt(), "encoder_states": item["encoder_states"],
                              "response": item["kd_response"]}])
        logits = m(batch).logits[0, :-1] / opts.temperature
        pos = batch["labels"][0, 1:].ne(IGNORE_INDEX).nonzero().squeeze(-1)[:5]
        top = logits[pos].topk(opts.top_k, -1)
    own = {**item, "kd_top_idx": top.indices, "kd_top_logp": top.values.log_softmax(-1)}
    zero, _ = kd_loss(m, [own], opts)
    assert abs(float(zero)) < 1e-4


def test_registry_entries_have_options_and_needs():
    assert {"ctc", "kd"} <= set(OBJECTIVES)
    for name, obj in OBJECTIVES.items():
        obj.options()  # every option has a default
        assert callable(obj.loss) and isinstance(obj.needs, tuple), name


def test_sampled_softmax_ctc_matches_the_full_vocabulary_when_every_token_is_sampled(tiny_tokenizer):
    """With the correction, sampling (nearly) all other tokens gives (nearly) the full-vocabulary loss."""
    m = _model(tiny_tokenizer)
    m.adaptor.eval()
    item = {"encoder_states": torch.randn(30, 16), "ctc_targets": [5, 9, 9, 12]}
    full, _ = ctc_loss(m, [item], CTCOptions())
    torch.manual_seed(0)
    sampled, _ = ctc_loss(m, [item], CTCOptions(negatives=200_000))  # every token drawn, duplicates included
    # duplicates inflate the sampled mass by exactly the correction, so the normaliser is unbiased here
    assert abs(sampled.item() - full.item()) < 0.05 * full.item()
    small, n = ctc_loss(m, [item], CTCOptions(negatives=16))
    assert n == 4 and torch.isfinite(small)


def _bpe_tokenizer():
    """A byte-level BPE trained in code on a few words, so whole words are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False)
    tk.train_from_iterator(["what is the chemical symbol for sodium and oxygen? it is na, an ox."] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|im_end|>")


def test_bf16_adaptor_runs_the_adaptor_in_bfloat16_while_training_only(tiny_tokenizer):
    """Mixed precision: the loss stays close to the float32 one, the gradients reach the float32
    weights, the adaptor's matmuls really run in bfloat16 (their outputs differ from float32), and
    evaluation (dev passes, decoding) keeps float32 whatever the option says."""
    m = _model(tiny_tokenizer)
    m.adaptor.grow_context(1)
    for p in m.adaptor.context.parameters():  # move the grown layer off the identity
        torch.nn.init.normal_(p, std=0.05)
    m.adaptor.train()
    for mod in m.adaptor.modules():  # no dropout: the two runs differ only by precision
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    item = {"encoder_states": torch.randn(30, 16), "ctc_targets": [5, 9, 9, 12]}
    fp32, _ = ctc_loss(m, [item], CTCOptions())
    bf16, n = ctc_loss(m, [item], CTCOptions(bf16_adaptor=True))
    assert n == 4 and bf16.item() != fp32.item()  # autocast took effect
    assert abs(bf16.item() - fp32.item()) < 0.05 * abs(fp32.item())
    bf16.backward()
    grad = m.adaptor.linear1.weight.grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    m.adaptor.eval()
    a, _ = ctc_loss(m, [item], CTCOptions())
    b, _ = ctc_loss(m, [item], CTCOptions(bf16_adaptor=True))
    assert a.item() == b.item()
