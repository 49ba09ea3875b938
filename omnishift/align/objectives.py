"""Alignment objectives: what the adaptor learns while the encoder and the LLM stay frozen.

One registry, :data:`OBJECTIVES`, maps a name (``objectives[].name`` in an align YAML) to an
:class:`Objective`: a loss function and the dataclass of its options. A loss receives the speech
LLM, a list of alignment items and its options, and returns ``(summed loss, count)``: the trainer
adds ``weight · sum / count`` over the configured objectives, so losses combine freely.

* ``ctc``: CTC of the adaptor outputs against the transcript's LLM tokens, the classes being the
  LLM's own (frozen) embedding rows plus a learned blank (:func:`~omnishift.models.adaptor.ctc_logits`).
  No LLM forward pass: ~1,000 clips per second of compute on 2 cores.
* ``kd``: the frozen LLM's response distribution given the speech (student) against its
  distribution given the transcript (teacher), on the LLM's *own* greedy answer to the transcript
  (BLSP/DeSTA2 targets; Ultravox's KL loss). Teacher top-k log-probabilities are computed once
  per item and cached (:func:`prepare_kd`), so training runs the LLM once per item.

Adding an objective is one file and one line: write ``omnishift/align/my_loss.py`` with an options
dataclass and ``loss(model, items, options) -> (sum, count)``, then add
``"my_loss": Objective(my_loss.loss, my_loss.Options)`` to :data:`OBJECTIVES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from omnishift.models.adaptor import ctc_logits


class Objective(NamedTuple):
    """A registry entry: ``loss(model, items, options) -> (sum, count)`` and its options dataclass;
    ``needs``: item fields the objective reads besides ``encoder_states``; ``select``: optional
    ``(items, options) -> items`` choosing the training items the objective uses (before ``limit``);
    ``prepare``: optional ``(model, items, options)`` giving them their targets once (e.g. cached
    teacher outputs) before training starts; ``before_training``: optional ``(model, options)``
    called after every objective is prepared (e.g. the frozen LLM cast to bfloat16)."""

    loss: Callable[[Any, list[dict], Any], tuple[torch.Tensor, int]]
    options: type
    needs: tuple = ()
    select: Callable[[list[dict], Any], list[dict]] | None = None
    prepare: Callable[[Any, list[dict], Any], None] | None = None
    before_training: Callable[[Any, Any], None] | None = None


def pad_states(items: list[dict], dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the items' encoder states: ``(B, max frames, C)`` and frames per item ``(B,)``."""
    frames = torch.tensor([it["encoder_states"].shape[0] for it in items], dtype=torch.long)
    c = items[0]["encoder_states"].shape[1]
    out = torch.zeros(len(items), int(frames.max()), c, dtype=dtype)
    for i, it in enumerate(items):
        out[i, : frames[i]] = it["encoder_states"].to(dtype)
    return out, frames


# ---- ctc ------------------------------------------------------------------------------------------
@dataclass
class CTCOptions:
    """Args: time_mask: share of encoder frames zeroed in random spans (SpecAugment-style, training
    only; 0 disables); feature_dropout: dropout on encoder states before the adaptor; bf16_logits:
    score the ~49k-token vocabulary in bfloat16 (1.7x faster on CPUs with AVX512-BF16, measured;
    the log-softmax and the loss stay float32); negatives: when > 0, score only the batch's target
    tokens plus this many uniformly sampled other tokens per step (sampled softmax: the sampled
    logits get + log(others / sampled), so their summed probability estimates that of all other
    tokens); decoding still uses the whole vocabulary. 0: the whole vocabulary every step.
    bf16_adaptor: run the adaptor (MLP and context layers) under bfloat16 autocast, weights and
    optimizer state staying float32 (mixed precision); training only. Faster steps on CPUs with
    native bfloat16 (``docs/benchmarks.md``); a recipe sets both bf16 options from its ``precision``."""

    time_mask: float = 0.0
    feature_dropout: float = 0.0
    bf16_logits: bool = False
    negatives: int = 0
    bf16_adaptor: bool = False


def speech_outputs(model, items: list[dict], time_mask: float = 0.0, feature_dropout: float = 0.0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptor outputs of the items' cached encoder states: ``(B, T/k, H)`` and lengths ``(B,)``."""
    states, frames = pad_states(items, model.adaptor.linear1.weight.dtype)  # B, T, C
    if model.adaptor.training and time_mask > 0:
        b, t, _ = states.shape
        width = 10  # frames per span (0.2 s)
        n_spans = max(1, int(round(time_mask * t / width)))
        starts = torch.randint(0, max(1, t - width), (b, n_spans), generator=generator)
        keep = torch.ones(b, t, dtype=torch.bool)
        for j in range(n_spans):
            cols = (starts[:, j:j + 1] + torch.arange(width)[None, :]).clamp(max=t - 1)  # B, width
            keep.scatter_(1, cols, False)
        states = states * keep.unsqueeze(-1)
    if model.adaptor.training and feature_dropout > 0:
        states = F.dropout(states, feature_dropout, training=True)
    emb = model.adaptor(states, frames)  # B, T, C -> B, T/k, H
    return emb, frames // model.config.k


def ctc_frames_needed(ids: list[int]) -> int:
    """Fewest speech embeddings a CTC path for ``ids`` needs: one per label, plus a blank between
    each pair of equal neighbours."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


def ctc_loss(model, items: list[dict], options: CTCOptions) -> tuple[torch.Tensor, int]:
    """Summed CTC negative log-likelihood over the batch and the number of target tokens."""
    if model.adaptor.ctc_blank is None:
        raise ValueError("the ctc objective needs an adaptor with a CTC head: set model.ctc_head: true")
    weight = model.adaptor.linear1.weight
    with torch.autocast(weight.device.type, dtype=torch.bfloat16, enabled=options.bf16_adaptor and model.adaptor.training):
        emb, lengths = speech_outputs(model, items, options.time_mask, options.feature_dropout)
    table = model.ctc_table()  # the base LLM's rows, frozen (the LLM itself may run in lower precision)
    targets = [torch.as_tensor(it["ctc_targets"], dtype=torch.long) for it in items]
    vocab, offset = None, None
    if options.negatives > 0:
        vocab, targets, offset = _sample_classes(targets, table.shape[0], options.negatives)
    dtype = torch.bfloat16 if options.bf16_logits else weight.dtype
    logits = ctc_logits(emb.to(dtype), table.to(dtype), model.adaptor.ctc_blank.to(dtype), vocab=vocab,
                        log_scale=model.adaptor.ctc_log_scale).float()  # B, T', 1 + V (or 1 + V')
    if offset is not None:
        logits = torch.cat([logits[..., : offset[0]], logits[..., offset[0]:] + offset[1]], dim=-1)
    log_probs = logits.log_softmax(-1).transpose(0, 1)  # B, T', 1+V -> T', B, 1+V
    targets = [t + 1 for t in targets]  # token (or class) j -> class j + 1; 0 is the blank
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    loss = F.ctc_loss(log_probs, torch.cat(targets), lengths, target_lengths, blank=0, reduction="sum",
                      zero_infinity=True)
    return loss, int(target_lengths.sum())


def _sample_classes(targets: list[torch.Tensor], vocab_size: int, negatives: int):
    """Classes of a sampled-softmax CTC step: the batch's target tokens, then ``negatives`` others.

    Returns:
        ``(vocab ids (V',), targets remapped to positions in vocab, (first sampled class, log weight))``.
    """
    tgt = torch.unique(torch.cat(targets))  # sorted target token ids
    neg = torch.randint(0, vocab_size, (negatives,))  # global RNG: restored on resume
    neg = neg[~torch.isin(neg, tgt)]
    position = torch.full((vocab_size,), -1, dtype=torch.long)
    position[tgt] = torch.arange(len(tgt))
    weight = math.log(max(vocab_size - len(tgt), 1) / max(len(neg), 1))
    return torch.cat([tgt, neg]), [position[t] for t in targets], (1 + len(tgt), weight)


# ---- kd -------------------------------------------------------------------------------------------
@dataclass
class KDOptions:
    """Args: temperature: softens both distributions (Ultravox: KL at T); top_k: teacher classes
    cached per response token; max_response_tokens: answer tokens distilled per item;
    questions_only: distil on question texts only (:func:`select_kd`); bf16_llm: the frozen LLM's
    weights in bfloat16 for the student's pass once the teacher targets are made in float32 (faster
    on a CPU with native bfloat16, where autocast over float32 weights gained little:
    ``docs/benchmarks.md``; a recipe sets it from its ``precision``)."""

    temperature: float = 1.0
    top_k: int = 32
    max_response_tokens: int = 24
    questions_only: bool = True
    bf16_llm: bool = False


def kd_before_training(model, options: KDOptions) -> None:
    """The frozen LLM in bfloat16 for the student's passes (``bf16_llm``); its gradient reaches the
    adaptor through the speech slots, its own weights never train."""
    if options.bf16_llm:
        model.ctc_table()  # the CTC classifier keeps the float32 rows
        model.llm.to(torch.bfloat16)


def select_kd(items: list[dict], options: KDOptions) -> list[dict]:
    """Questions only (by default): their answers carry what was asked (an instruction such as
    "Describe ..." under the answer-the-question prompt often gets a content-free reply)."""
    return [it for it in items if it["text"].rstrip().endswith("?")] if options.questions_only else items


def kd_loss(model, items: list[dict], options: KDOptions) -> tuple[torch.Tensor, int]:
    """Summed KL(teacher ‖ student) over the response tokens of the batch, and their count.

    The student sees ``s2t_prompt`` with the speech embeddings; the teacher's cached top-k
    log-probabilities (renormalised over its top-k) were computed from the transcript
    (:func:`prepare_kd`). The KL is taken over the teacher's top-k support, the student's
    log-probabilities coming from its full softmax at the same temperature; times T² as in
    Hinton et al., so the gradient scale does not depend on T.
    """
    from omnishift.models.processor import IGNORE_INDEX, s2t_prompt

    batch = model.processor([{"prompt": s2t_prompt(model.config.placeholder), "encoder_states": it["encoder_states"],
                              "response": it["kd_response"]} for it in items], padding_side="right")
    out = model(batch)
    t = options.temperature
    logits = out.logits[:, :-1].float() / t  # B, L-1, V: position p predicts token p+1
    labels = batch["labels"][:, 1:]  # B, L-1
    total, count = logits.new_zeros(()), 0
    for b, it in enumerate(items):
        pos = labels[b].ne(IGNORE_INDEX).nonzero().squeeze(-1)[: options.max_response_tokens]  # R
        idx = torch.as_tensor(it["kd_top_idx"][: len(pos)], dtype=torch.long)  # R, k
        p_t = torch.as_tensor(it["kd_top_logp"][: len(pos)], dtype=torch.float32).exp()  # R, k
        log_q = logits[b, pos].log_softmax(-1).gather(-1, idx)  # R, V -> R, k
        total = total + (p_t * (p_t.clamp_min(1e-12).log() - log_q)).sum() * t * t
        count += len(pos)
    return total, count


@torch.no_grad()
def prepare_kd(model, items: list[dict], options: KDOptions, batch_size: int = 16, progress: bool = True) -> None:
    """Give each item its KD target (in place): the LLM's greedy answer to the transcript and the
    teacher's top-k log-probabilities along it (``kd_response``, ``kd_top_idx``, ``kd_top_logp``)."""
    from tqdm.auto import tqdm

    from omnishift.models.processor import IGNORE_INDEX, t2t_prompt

    todo = [it for it in items if "kd_response" not in it]
    prompts = [{"prompt": t2t_prompt(it["text"])} for it in todo]
    answers = [None] * len(todo)
    for i, ans in tqdm(model.generate_stream(prompts, slots=batch_size, max_new_tokens=options.max_response_tokens),
                       total=len(todo), disable=not progress, desc="kd targets"):
        answers[i] = ans
    for s in range(0, len(todo), batch_size):
        chunk = todo[s:s + batch_size]
        batch = model.processor([{"prompt": t2t_prompt(it["text"]), "response": a}
                                 for it, a in zip(chunk, answers[s:s + batch_size])], padding_side="right")
        logits = model(batch).logits[:, :-1].float() / options.temperature  # B, L-1, V
        labels = batch["labels"][:, 1:]
        for b, it in enumerate(chunk):
            pos = labels[b].ne(IGNORE_INDEX).nonzero().squeeze(-1)[: options.max_response_tokens]
            top = logits[b, pos].topk(options.top_k, dim=-1)  # R, k
            it["kd_response"] = answers[s + b]
            it["kd_top_idx"] = top.indices.to(torch.int32)
            it["kd_top_logp"] = top.values.log_softmax(-1).half()  # renormalised over the top-k


#: The registry: objective name -> Objective(loss, options dataclass, extra item fields).
OBJECTIVES: dict[str, Objective] = {
    "ctc": Objective(ctc_loss, CTCOptions, ("ctc_targets",)),
    "kd": Objective(kd_loss, KDOptions, ("kd_response", "kd_top_idx", "kd_top_logp"), select=select_kd,
                    prepare=prepare_kd, before_training=kd_before_training),
}
