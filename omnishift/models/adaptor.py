"""The speech adaptor of LLaMA-Omni (paper Sec. 2.1): frame stacking + a 2-layer MLP.

Whisper emits 50 frames per second, far too many tokens for an LLM context. The adaptor
concatenates k consecutive frames (k = 5 -> 10 embeddings per second) and projects them into the
LLM's embedding space. Module names (``linear1``/``linear2``) follow LLaMA-Omni's
``speech_projector`` so its checkpoints map one-to-one.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _context_layer(d: int) -> nn.TransformerEncoderLayer:
    """One pre-norm context layer of width ``d`` (64-wide heads where ``d`` allows)."""
    heads = d // 64 if d % 64 == 0 and d >= 64 else 1
    return nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.1, activation="gelu", batch_first=True,
                                      norm_first=True)


class FrameStackAdaptor(nn.Module):
    """Concatenate ``k`` frames, drop the remainder, then Linear -> ReLU -> Linear [-> RMSNorm].

    Args:
        d_enc: encoder width (384 for Whisper tiny, 1280 for large-v3).
        d_llm: LLM embedding width.
        k: frames stacked per speech embedding.
        hidden: MLP hidden width (2048 in LLaMA-Omni).
        norm_scale: when set, an output RMSNorm whose gain starts at this value (the RMS of the
            LLM's token embeddings: 0.136 for SmolLM2). A plain MLP's output is far off the
            embedding scale; Ultravox and tiny-audio normalise it for that reason. None keeps
            LLaMA-Omni's plain MLP (and its checkpoint layout).
        ctc_blank: add a CTC blank class (``ctc_blank``: a ``d_llm + 1`` vector, projection + bias)
            for :func:`ctc_logits`, whose other classes are the LLM's own token embeddings, and a
            learned logit scale (``ctc_log_scale``).
        ctc_scale: initial logit scale; :func:`ctc_scale_init` sets it so that a speech embedding
            equal to a token's row scores ~10 against it whatever the LLM's embedding scale (SmolLM2:
            ~1; an LLM with RMS-0.02 embeddings would otherwise start with near-uniform logits).
        layers: pre-norm Transformer encoder layers over the adaptor outputs (before the RMSNorm).
            Why: the MLP sees 100 ms of encoder states at a time, while a BPE token spans 0.1-0.8 s;
            CTC over the LLM's vocabulary plateaued at 44 % WER on held-out synthetic clips with the
            plain MLP (experiments/align_cpu), i.e. it underfits even in domain. 0 keeps LLaMA-Omni's layout.
            Positions come from the Whisper states themselves (sinusoidal embeddings added in the
            encoder), so the layers add none.
    """

    def __init__(self, d_enc: int, d_llm: int, k: int = 5, hidden: int = 2048, norm_scale: float | None = None,
                 ctc_blank: bool = False, ctc_scale: float = 1.0, layers: int = 0):
        super().__init__()
        self.k = k
        self.linear1 = nn.Linear(k * d_enc, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, d_llm)
        self.context = None
        if layers > 0:
            self.context = nn.TransformerEncoder(_context_layer(d_llm), layers, enable_nested_tensor=False)
        self.norm = None
        if norm_scale is not None:
            self.norm = nn.RMSNorm(d_llm, eps=1e-6)
            nn.init.constant_(self.norm.weight, float(norm_scale))
        self.ctc_blank = nn.Parameter(torch.zeros(d_llm + 1)) if ctc_blank else None
        self.ctc_log_scale = nn.Parameter(torch.tensor(math.log(ctc_scale))) if ctc_blank else None

    def grow_context(self, n: int) -> None:
        """Append ``n`` context layers that start as the identity, so the adaptor's output is unchanged.

        Why: a context layer trained from scratch learns slower than the MLP alone (experiments/align_cpu:
        ``ctc_ctx`` was behind the plain MLP at equal steps), so growing one onto an aligned adaptor
        keeps what it hears and only adds what cross-frame attention can correct. Each new pre-norm
        layer computes ``x + attn(norm(x)) + ffn(norm(.))``; zeroing the attention's output projection
        and the feed-forward's second linear makes both branches 0 (as LoRA's B = 0) while their
        gradients are not, so training moves them off the identity at once.
        """
        if n < 1:
            raise ValueError(f"grow_context needs n >= 1 layers, got {n}")
        new = [_context_layer(self.linear2.out_features) for _ in range(n)]
        for layer in new:
            for proj in (layer.self_attn.out_proj, layer.linear2):
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
        new = [layer.to(self.linear2.weight.device, self.linear2.weight.dtype) for layer in new]
        if self.context is None:
            self.context = nn.TransformerEncoder(new[0], 1, enable_nested_tensor=False)
            self.context.layers = nn.ModuleList(new)  # TransformerEncoder deep-copies its template; keep ours
        else:
            self.context.layers.extend(new)
        self.context.num_layers = len(self.context.layers)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map encoder frames to LLM embeddings.

        Args:
            frames: ``(B, T, C)`` encoder outputs.
            lengths: ``(B,)`` real frames per row of a padded batch; the context layers then attend
                to real frames only, so a clip's embeddings do not depend on its batch-mates (None:
                every frame is real).

        Returns:
            ``(B, T // k, d_llm)``; the last ``T % k`` frames are dropped.
        """
        b, t, c = frames.shape
        n = t // self.k
        x = frames[:, : n * self.k].reshape(b, n, self.k * c)  # B, T, C -> B, T/k, C*k
        x = self.linear2(self.relu(self.linear1(x)))  # B, T/k, C*k -> B, T/k, H
        if self.context is not None and n > 0:
            pad = None
            if lengths is not None:
                real = (lengths.to(x.device) // self.k).clamp(min=1)  # B
                pad = torch.arange(n, device=x.device)[None, :] >= real[:, None]  # B, T/k (True: padding)
            x = self.context(x, src_key_padding_mask=pad)  # B, T/k, H -> B, T/k, H
        return x if self.norm is None else self.norm(x)


def ctc_scale_init(token_embeddings: torch.Tensor, target: float = 10.0) -> float:
    """Logit scale at which an embedding row scores ``target`` against itself on average."""
    return target / float(token_embeddings.detach().float().pow(2).sum(-1).mean())


def ctc_logits(emb: torch.Tensor, token_embeddings: torch.Tensor, blank: torch.Tensor,
               vocab: torch.Tensor | None = None, log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """CTC class scores of adaptor outputs against the LLM's own (frozen) token embeddings.

    Why the embedding matrix as the classifier (Soundwave, LegoSLM, TASU): the loss then pulls each
    speech embedding towards the embedding row of the token it says, i.e. into the region of the
    LLM's input space the LLM already reads, with no LLM forward pass at all.

    Args:
        emb: ``(B, T, H)`` adaptor outputs.
        token_embeddings: ``(V, H)`` the LLM's input embedding table (frozen).
        blank: ``(H + 1,)`` blank projection and bias (:attr:`FrameStackAdaptor.ctc_blank`).
        vocab: optional ``(V',)`` token ids to score (a subset to save compute); class ``j + 1``
            is then ``vocab[j]``.
        log_scale: optional scalar; token scores are multiplied by its exponential.

    Returns:
        ``(B, T, 1 + V')`` logits; class 0 is the blank, class ``j + 1`` token ``j`` (or ``vocab[j]``).
    """
    table = token_embeddings if vocab is None else token_embeddings[vocab]  # V', H
    tokens = emb @ table.t()  # B, T, H -> B, T, V'
    if log_scale is not None:
        tokens = tokens * log_scale.exp()
    blank_logit = emb @ blank[:-1] + blank[-1]  # B, T
    return torch.cat([blank_logit.unsqueeze(-1), tokens], dim=-1)  # B, T, 1 + V'
