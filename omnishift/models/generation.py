"""Batched greedy decoding that stops paying for a row once it has finished.

``transformers``' ``generate`` keeps every row of a batch in every step until the *longest* answer
ends: a row that said ``Paris<|im_end|>`` after 3 tokens still runs through all 30 layers for
61 more steps, and the left padding of the prompt stays in every attention. For QA evaluation
(short answers of very different lengths, batch 16) that is most of the batched cost.

:func:`greedy_generate` is plain greedy decoding (argmax, stop at an end-of-sequence token or
after ``max_new_tokens``) with two savings that do not change any row's computation:

* finished rows leave the batch: their KV-cache entries, mask and positions are dropped;
* leading columns that are padding for every remaining row are cut from the mask and the cache
  (positions are explicit, so RoPE and causality are unaffected).

Each remaining row still attends to exactly its own tokens at its own positions, so the result
is the greedy output of that row alone (``tests/models/test_generation.py`` checks it against
one-at-a-time decoding and against ``generate``).

That still leaves a static batch as slow as its longest answer: in QA evaluation every batch of
16 holds one answer that runs to the 64-token cap, so the batch takes 64 steps while most rows
stopped after ~20. :func:`continuous_greedy_generate` (continuous batching) keeps up to ``slots``
sequences in flight over a whole list of items: when rows finish, the next pending items are
prefilled together (a left-padded batch of newcomers, speech embeddings included) and their KV
caches are merged into the running batch, right-aligned with left padding; positions stay per row
and padding stays masked, so every row is still computed as if it were alone. Finished items are
yielded as they complete, so a caller can stream them to disk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F


def eos_token_ids(llm, tokenizer) -> set[int]:
    """End-of-sequence ids: the LLM's generation config plus the tokenizer's EOS."""
    ids = set()
    cfg_eos = getattr(getattr(llm, "generation_config", None), "eos_token_id", None)
    if cfg_eos is not None:
        ids |= set(cfg_eos) if isinstance(cfg_eos, (list, tuple)) else {cfg_eos}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the LLM and its tokenizer define no end-of-sequence token; greedy decoding cannot stop")
    return ids


def _select_cache(cache, rows: torch.Tensor | None, start: int) -> None:
    """Keep batch ``rows`` (None: all) and sequence positions ``start:`` of every cache layer."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None:
            continue
        k, v = layer.keys, layer.values
        if rows is not None:
            k, v = k[rows], v[rows]
        if start:
            k, v = k[:, :, start:], v[:, :, start:]
        layer.keys, layer.values = k, v


@torch.no_grad()
def greedy_generate(llm, attention_mask: torch.Tensor, max_new_tokens: int, eos_ids: set[int],
                    input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy-decode a left-padded batch, dropping rows as they finish.

    Args:
        llm: a causal LM (``transformers`` or PEFT-wrapped) that accepts ``position_ids``,
            ``past_key_values`` and ``logits_to_keep``.
        attention_mask: ``(B, L)``, 1 on real tokens, left padded.
        max_new_tokens: most tokens generated per row.
        eos_ids: ids that end a row (not included in its output).
        input_ids: ``(B, L)`` prompt ids, or
        inputs_embeds: ``(B, L, H)`` prompt embeddings (speech prompts).

    Returns:
        The generated ids of each row, in batch order, without the end-of-sequence token.
    """
    from transformers import DynamicCache

    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    mask = attention_mask.long()
    if mask[:, -1].eq(0).any():
        raise ValueError("greedy_generate needs a left-padded batch (the last column must be real tokens)")
    device = mask.device
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    eos = torch.tensor(sorted(eos_ids), device=device)
    cache = DynamicCache()
    out = [[] for _ in range(mask.shape[0])]
    alive = torch.arange(mask.shape[0], device=device)  # batch row -> original row
    next_pos = position_ids[:, -1] + 1
    logits = llm(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                 past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        done = torch.isin(token, eos)
        for row, tok, fin in zip(alive.tolist(), token.tolist(), done.tolist()):
            if not fin:
                out[row].append(tok)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        rows = None
        if bool(done.any()):
            rows = (~done).nonzero().squeeze(1)
            alive, token, mask, next_pos = alive[rows], token[rows], mask[rows], next_pos[rows]
        start = int(mask.any(0).long().argmax())  # first column that is real for some remaining row
        if rows is not None or start:
            mask = mask[:, start:]
            _select_cache(cache, rows, start)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits = llm(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                     past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        next_pos = next_pos + 1
    return out


def _merge_cache(cache, new) -> None:
    """Append the rows of ``new`` to ``cache`` in place, right-aligning both on the longer length.

    The shorter side gets zero keys/values on the left; the caller pads its attention mask with
    zeros there too, so those columns are never attended to.
    """
    for a, b in zip(cache.layers, new.layers):
        if getattr(a, "keys", None) is None or getattr(b, "keys", None) is None:
            continue
        la, lb = a.keys.shape[2], b.keys.shape[2]
        n = max(la, lb)
        a.keys = torch.cat([F.pad(a.keys, (0, 0, n - la, 0)), F.pad(b.keys, (0, 0, n - lb, 0))])  # Ba+Bb, h, n, d
        a.values = torch.cat([F.pad(a.values, (0, 0, n - la, 0)), F.pad(b.values, (0, 0, n - lb, 0))])  # Ba+Bb, h, n, d


def _left_pad(mask: torch.Tensor, n: int) -> torch.Tensor:
    """``mask`` ``(B, L)`` with ``n - L`` zero columns put on its left: ``(B, n)``."""
    return F.pad(mask, (n - mask.shape[1], 0))


class _Running:
    """The sequences in flight: their KV cache, ``(B, L)`` mask, ``(B,)`` next positions and input
    tokens, and which item each row decodes (``rows``)."""

    def __init__(self):
        self.cache = self.mask = self.next_pos = self.token = None
        self.rows: list[int] = []

    def keep(self, keep: torch.Tensor) -> None:
        """Keep rows ``keep`` (B',) and cut leading columns that pad every one of them."""
        self.rows = [self.rows[j] for j in keep.tolist()]
        if not self.rows:
            self.__init__()
            return
        self.token, self.mask, self.next_pos = self.token[keep], self.mask[keep], self.next_pos[keep]
        start = int(self.mask.any(0).long().argmax())  # first column that is real for some remaining row
        self.mask = self.mask[:, start:]  # B', L - start
        _select_cache(self.cache, keep, start)

    def admit(self, other: "_Running") -> None:
        """Merge newly prefilled rows into the batch, right-aligned with left padding."""
        if not self.rows:
            self.cache, self.mask, self.next_pos, self.token, self.rows = (other.cache, other.mask, other.next_pos,
                                                                           other.token, other.rows)
            return
        n = max(self.mask.shape[1], other.mask.shape[1])
        _merge_cache(self.cache, other.cache)
        self.mask = torch.cat([_left_pad(self.mask, n), _left_pad(other.mask, n)])  # B + k', n
        self.next_pos = torch.cat([self.next_pos, other.next_pos])  # B + k'
        self.token = torch.cat([self.token, other.token])  # B + k'
        self.rows = self.rows + other.rows


@torch.no_grad()
def continuous_greedy_generate(llm, prefill: Callable[[list[int]], dict], n_items: int, slots: int,
                               max_new_tokens: int, eos_ids: set[int]) -> Iterator[tuple[int, list[int]]]:
    """Greedy-decode ``n_items`` prompts with up to ``slots`` in flight (continuous batching).

    Items enter in index order. Each step feeds one token of every running row; rows that end
    (end-of-sequence token or ``max_new_tokens``) leave the batch and free slots are refilled by
    prefilling the next items together, so the batch stays full until the queue runs dry instead
    of waiting for its longest answer. The result of every item is its one-at-a-time greedy answer.

    Args:
        llm: a causal LM (``transformers`` or PEFT-wrapped) that accepts ``position_ids``,
            ``past_key_values`` and ``logits_to_keep``.
        prefill: ``prefill(indices)`` -> the prompts of those items as a left-padded batch:
            ``{"attention_mask": (k, L), "input_ids": (k, L)}`` or ``{"attention_mask": (k, L),
            "inputs_embeds": (k, L, H)}`` (speech prompts, adaptor output already in place).
            Called lazily, so audio is only encoded when its item gets a slot.
        n_items: how many items (indices ``0..n_items-1``).
        slots: most sequences decoded together.
        max_new_tokens: most tokens generated per item.
        eos_ids: ids that end an item (not included in its output).

    Returns:
        An iterator of ``(index, generated ids without the end-of-sequence token)`` in order of
        completion (not index order).
    """
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    if max_new_tokens <= 0:
        yield from ((i, []) for i in range(n_items))
        return
    queue = deque(range(n_items))
    outs: dict[int, list[int]] = {}
    run = _Running()

    def advance(idx: list[int], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick each row's next token; returns (tokens (B,), finished (B,) bool)."""
        tok = logits.argmax(-1)  # B, V -> B
        fin = []
        for i, t in zip(idx, tok.tolist()):
            if t not in eos_ids:
                outs[i].append(t)
            fin.append(t in eos_ids or len(outs[i]) == max_new_tokens)
        return tok, torch.tensor(fin, device=tok.device)

    while queue or run.rows:
        while queue and len(run.rows) < slots:  # refill free slots (their prefill gives their first token)
            take = [queue.popleft() for _ in range(min(slots - len(run.rows), len(queue)))]
            new, logits = _prefill(llm, prefill(take), take)
            for i in take:
                outs[i] = []
            new.token, fin = advance(take, logits)
            yield from ((i, outs.pop(i)) for i, f in zip(take, fin.tolist()) if f)
            new.keep((~fin).nonzero().squeeze(1))  # k'
            if new.rows:
                run.admit(new)
        if not run.rows:
            break
        run.mask = torch.cat([run.mask, run.mask.new_ones(run.mask.shape[0], 1)], dim=1)  # B, L + 1
        logits = llm(input_ids=run.token[:, None], attention_mask=run.mask, position_ids=run.next_pos[:, None],
                     past_key_values=run.cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        run.next_pos = run.next_pos + 1
        run.token, fin = advance(run.rows, logits)
        yield from ((i, outs.pop(i)) for i, f in zip(run.rows, fin.tolist()) if f)
        if bool(fin.any()):
            run.keep((~fin).nonzero().squeeze(1))  # B'


def _prefill(llm, p: dict, take: list[int]) -> tuple[_Running, torch.Tensor]:
    """Prefill newcomers ``take`` (a left-padded batch ``p``): their running state (next positions
    set, tokens still to pick) and their last-position logits ``(k, V)``."""
    from transformers import DynamicCache

    new = _Running()
    new.mask = p["attention_mask"].long()  # k, Lp
    if new.mask[:, -1].eq(0).any():
        raise ValueError("prefill must return a left-padded batch (the last column must be real tokens)")
    pos = (new.mask.cumsum(-1) - 1).clamp(min=0)  # k, Lp
    new.cache, new.rows = DynamicCache(), list(take)
    logits = llm(input_ids=p.get("input_ids"), inputs_embeds=p.get("inputs_embeds"), attention_mask=new.mask,
                 position_ids=pos, past_key_values=new.cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    new.next_pos = pos[:, -1] + 1  # k
    return new, logits
