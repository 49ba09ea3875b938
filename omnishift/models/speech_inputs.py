"""What fills the speech slots: one table, :data:`SPEECH_INPUTS`, of the ways the LLM reads speech.

Why a table: each reading decides how many slots a clip gets, which vectors fill them, whether the
LLM's loss reaches the adaptor through them, and which settings it reads. Trainer, evaluator, the
alignment recipe and the pipeline ask the table instead of branching on a name.

Two steps per clip, so that a differentiable reading is exact under batching:

1. ``plan(model, states) -> SpeechPlan`` runs once in the processor, without gradient: the CTC
   segmentation (which frames say which token). Discrete, so nothing is lost by fixing it; the
   processor reserves one slot per planned row.
2. ``fill(model, batch) -> (sum of slots, H)`` runs in the forward pass, with gradient where the
   reading is ``differentiable``: the adaptor is run again on the batch's encoder states and the
   planned segments are pooled.

Readings (``speech_input`` of a model folder):

* ``adaptor``: one adaptor output per k frames (LLaMA-Omni; the paper's path).
* ``ctc_top1``: the CTC path's tokens (greedy, or beam search with the LLM: ``ctc_decoding``) as
  the LLM's own token rows. An ASR cascade inside the model: no gradient reaches the adaptor. Kept as
  the reference the continuous readings are measured against.
* ``ctc_soft``: per greedy CTC segment, the mean over its frames of ``softmax(token logits / T)``
  times the token table (posterior-weighted embeddings: LegoSLM, arXiv 2505.11352; FBK's "weighted"
  shrink adapter). Blank-won frames are dropped (CJST, 2411.07607). Continuous, with gradient.
* ``ctc_soft_beam``: ``ctc_soft`` over the frames a CTC forced alignment gives each token of the
  beam transcript (``ctc_decoding``), so the slots are the beam search's words (its LLM prior
  included) and their vectors the adaptor's posteriors, with gradient; ``prior`` mixes in the beam
  token's own row where the posterior alone would overrule the LLM.
* ``ctc_peak``: per greedy CTC segment, the mean adaptor output over its frames (WeSR's speech LLM;
  Wav2Prompt, 2406.00522): the adaptor's own vectors, with gradient.

Adding a reading is one function pair and one line in :data:`SPEECH_INPUTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch


class SpeechPlan(NamedTuple):
    """One clip's slots: ``tokens (n,)`` the token each slot reads as (the CTC reading), and
    ``spans (n, 2)`` the [start, end) adaptor frames it pools (-1 where a beam token has no span)."""

    tokens: torch.Tensor
    spans: torch.Tensor


@dataclass
class SoftOptions:
    """Args:
        temperature: divides the token logits before the softmax (lower: closer to the token row of
            the top class; ``ctc_soft`` at T -> 0 is ``ctc_top1`` read greedily).
        prior: weight of the planned token's own row in each slot's vector,
            ``(1 - prior) * posterior-weighted rows + prior * row of the planned token``. For
            ``ctc_soft_beam`` the planned token is the beam search's choice, so this fuses the LLM's
            prior into the vector where the posterior alone would follow the acoustics; the gradient
            keeps reaching the adaptor, scaled by ``1 - prior``. 0: the posterior alone.
    """

    temperature: float = 1.0
    prior: float = 0.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"speech_options temperature must be > 0, got {self.temperature}")
        if not 0 <= self.prior < 1:
            raise ValueError(f"speech_options prior must be in [0, 1), got {self.prior}: at 1 the slot is the "
                             "planned token's row and no gradient reaches the adaptor (that is speech_input ctc_top1)")


@dataclass
class NoOptions:
    """This reading has no settings."""


class SpeechInput(NamedTuple):
    """A registry entry.

    ``plan``: ``(model, states (frames, C)) -> SpeechPlan`` or None (one slot per k frames);
    ``fill``: ``(model, batch) -> (sum of slots, H)`` or None (the adaptor outputs);
    ``differentiable``: the LLM's loss reaches the adaptor through the filled vectors;
    ``beam``: reads ``ctc_decoding`` (beam search picks tokens, so only a token reading can use it);
    ``ctc_head``: needs an adaptor with a CTC head; ``options``: dataclass of ``speech_options``.
    """

    plan: Callable | None
    fill: Callable | None
    differentiable: bool
    beam: bool
    ctc_head: bool
    options: type
    summary: str


def greedy_segments(logp: torch.Tensor) -> SpeechPlan:
    """The greedy CTC path's segments: runs of one non-blank class over ``logp (T, 1 + V)``.

    Returns:
        ``SpeechPlan`` with one row per run (token id = class - 1) and its frame span.
    """
    best = logp.argmax(-1)  # T
    t = best.shape[0]
    starts = torch.ones(t, dtype=torch.bool)
    starts[1:] = best[1:] != best[:-1]
    first = starts.nonzero().squeeze(-1)  # R: first frame of each run
    ends = torch.cat([first[1:], first.new_tensor([t])])  # R
    cls = best[first]
    keep = cls != 0  # runs the blank won are dropped
    spans = torch.stack([first[keep], ends[keep]], dim=-1)  # n, 2
    return SpeechPlan(cls[keep] - 1, spans)


def forced_spans(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The frames each token of ``tokens (n,)`` occupies on the best CTC path that emits exactly
    ``tokens`` over ``logp (T, 1 + V)`` (Viterbi over the usual blank-interleaved states).

    Why: a beam search with an LM picks tokens, not frames; pooling a token's posteriors needs the
    frames that say it. Returns ``(n, 2)`` [start, end) spans; raises if no CTC path emits them.
    """
    n, t = len(tokens), logp.shape[0]
    if n == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    labels = np.zeros(2 * n + 1, dtype=np.int64)
    labels[1::2] = tokens.numpy() + 1  # 2n+1 states: blank, y1, blank, y2, ..., blank
    emit = logp[:, torch.from_numpy(labels)].double().numpy()  # T, 2n+1
    skip = np.zeros(2 * n + 1, dtype=bool)  # a token state may be entered from the token before ...
    skip[3::2] = labels[3::2] != labels[1:-2:2]  # ... over the blank, unless the two are the same
    score = np.full(2 * n + 1, -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((t, 2 * n + 1), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for f in range(1, t):
        one = np.concatenate([[-np.inf], score[:-1]])
        two = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        cand = np.stack([score, one, two])  # 3, 2n+1
        back[f] = cand.argmax(0)
        score = cand.max(0) + emit[f]
    s = 2 * n if score[2 * n] >= score[2 * n - 1] else 2 * n - 1
    if not np.isfinite(score[s]):
        raise ValueError(f"no CTC path over {t} frames emits these {n} tokens: the tokens were not "
                         "decoded from these log-probabilities (a stale token cache?)")
    state = np.empty(t, dtype=np.int64)
    for f in range(t - 1, -1, -1):  # follow the back-pointers from the last frame
        state[f] = s
        s -= back[f, s]
    spans = np.zeros((n, 2), dtype=np.int64)
    frames = np.nonzero(state % 2 == 1)[0]  # frames on a token state
    which = (state[frames] - 1) // 2  # the token each one says
    spans[:, 0] = [frames[which == i].min() for i in range(n)]
    spans[:, 1] = [frames[which == i].max() + 1 for i in range(n)]
    return torch.from_numpy(spans)


def _states(batch: dict, model) -> torch.Tensor:
    """The batch's encoder states ``(N, frames, C)``, encoded here when it carries log-mels."""
    if "encoder_states" in batch:
        return batch["encoder_states"]
    return model.encode_features(batch["input_features"], batch["speech_frames"])


def _segment_index(batch: dict, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames the planned segments cover, as flat indices into ``(N * width)``, and the segment
    (slot, in batch order) each belongs to."""
    spans, slots = batch["speech_spans"], batch["speech_slots"]  # S, 2 ; N
    clip = torch.repeat_interleave(torch.arange(len(slots), device=spans.device), slots.to(spans.device))  # S
    lengths = spans[:, 1] - spans[:, 0]  # S
    seg = torch.repeat_interleave(torch.arange(len(spans), device=spans.device), lengths)  # F
    offset = torch.arange(int(lengths.sum()), device=spans.device) - torch.repeat_interleave(
        lengths.cumsum(0) - lengths, lengths)  # F: position inside the segment
    frame = clip[seg] * width + spans[seg, 0] + offset  # F
    return frame, seg


def _pooled(model, batch: dict, per_frame: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean of ``per_frame(adaptor outputs (F, H))`` over each planned segment: ``(S, D)``."""
    states, frames = _states(batch, model), batch["speech_frames"]
    keep = int(frames.max())
    emb = model.adaptor(states[:, :keep].to(model.adaptor.linear1.weight.dtype), frames)  # N, keep, C -> N, keep/k, H
    n, width, h = emb.shape
    frame, seg = _segment_index(batch, width)
    values = per_frame(emb.reshape(n * width, h)[frame])  # N, W, H -> N*W, H -> F, D
    s = len(batch["speech_spans"])
    total = values.new_zeros(s, values.shape[-1]).index_add(0, seg, values)  # F, D -> S, D
    count = torch.bincount(seg, minlength=s).clamp_min(1).to(values.dtype)  # S
    return total / count[:, None]


# ---- readings ----------------------------------------------------------------------------------
def plan_tokens(model, states: torch.Tensor) -> SpeechPlan:
    """The CTC reading's tokens (greedy or beam, through the token cache), no spans."""
    tokens = torch.tensor(model.clip_tokens([states])[0], dtype=torch.long)
    return SpeechPlan(tokens, torch.full((len(tokens), 2), -1, dtype=torch.long))


def plan_greedy(model, states: torch.Tensor) -> SpeechPlan:
    """The greedy CTC segments of one clip."""
    return greedy_segments(next(model.ctc_log_probs([states])))


def plan_aligned(model, states: torch.Tensor) -> SpeechPlan:
    """The CTC reading's tokens (beam or greedy, as :func:`plan_tokens`) with the frames a forced
    alignment gives each."""
    logp = next(model.ctc_log_probs([states]))  # F, 1 + V: once, for the beam (when uncached) and the alignment
    tokens = torch.tensor(model.clip_tokens([states], [logp])[0], dtype=torch.long)
    return SpeechPlan(tokens, forced_spans(logp, tokens))


def fill_top1(model, batch: dict) -> torch.Tensor:
    """The planned tokens' rows of the LLM's own table, detached: ``(S, H)``."""
    return model.llm.get_input_embeddings().weight[batch["speech_tokens"]].detach()


def fill_soft(model, batch: dict) -> torch.Tensor:
    """Posterior-weighted token rows per segment, with gradient: ``(S, V) @ (V, H) -> (S, H)``, mixed
    with the planned token's row by ``prior`` (:class:`SoftOptions`)."""
    from omnishift.models.adaptor import ctc_logits

    t = model.speech_options.temperature
    rows = model.llm.get_input_embeddings().weight
    table = model.ctc_table()  # the CTC classifier, in the adaptor's precision (the LLM's may be lower)

    def posteriors(emb: torch.Tensor) -> torch.Tensor:  # F, H -> F, V
        logits = ctc_logits(emb, table.to(emb.device, emb.dtype), model.adaptor.ctc_blank,
                            log_scale=model.adaptor.ctc_log_scale)
        return (logits[:, 1:].float() / t).softmax(-1)

    soft = _pooled(model, batch, posteriors) @ rows.float()  # S, V @ V, H -> S, H
    a = model.speech_options.prior
    if a:
        soft = (1 - a) * soft + a * rows[batch["speech_tokens"]].detach().float()  # S, H
    return soft.to(rows.dtype)


def fill_peak(model, batch: dict) -> torch.Tensor:
    """The adaptor's own outputs, averaged per segment, with gradient: ``(S, H)``."""
    return _pooled(model, batch, lambda emb: emb)


#: The registry: ``speech_input`` name -> SpeechInput.
SPEECH_INPUTS: dict[str, SpeechInput] = {
    "adaptor": SpeechInput(None, None, True, False, False, NoOptions, "one adaptor output per k frames"),
    "ctc_top1": SpeechInput(plan_tokens, fill_top1, False, True, True, NoOptions,
                            "CTC transcript tokens as token rows (cascade in the model)"),
    "ctc_soft": SpeechInput(plan_greedy, fill_soft, True, False, True, SoftOptions,
                            "posterior-weighted token rows per CTC segment"),
    "ctc_soft_beam": SpeechInput(plan_aligned, fill_soft, True, True, True, SoftOptions,
                                 "posterior-weighted token rows per forced-aligned beam token"),
    "ctc_peak": SpeechInput(plan_greedy, fill_peak, True, False, True, NoOptions,
                            "adaptor outputs per CTC segment"),
}


def reading(name: str) -> SpeechInput:
    """The table entry for ``name``, or an error listing the readings."""
    if name not in SPEECH_INPUTS:
        raise ValueError(f"speech_input {name!r} unknown: use one of {list(SPEECH_INPUTS)}")
    return SPEECH_INPUTS[name]
