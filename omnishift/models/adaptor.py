"""The speech adaptor of LLaMA-Omni (paper Sec. 2.1): frame stacking + a 2-layer MLP.

Whisper emits 50 frames per second, far too many tokens for an LLM context. The adaptor
concatenates k consecutive frames (k = 5 -> 10 embeddings per second) and projects them into the
LLM's embedding space. Module names (``linear1``/``linear2``) follow LLaMA-Omni's
``speech_projector`` so its checkpoints map one-to-one.
"""

from __future__ import annotations

import torch
from torch import nn


class FrameStackAdaptor(nn.Module):
    """Concatenate ``k`` frames, drop the remainder, then Linear -> ReLU -> Linear.

    Args:
        d_enc: encoder width (384 for Whisper tiny, 1280 for large-v3).
        d_llm: LLM embedding width.
        k: frames stacked per speech embedding.
        hidden: MLP hidden width (2048 in LLaMA-Omni).
    """

    def __init__(self, d_enc: int, d_llm: int, k: int = 5, hidden: int = 2048):
        super().__init__()
        self.k = k
        self.linear1 = nn.Linear(k * d_enc, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, d_llm)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Map encoder frames to LLM embeddings.

        Args:
            frames: ``(B, T, C)`` encoder outputs.

        Returns:
            ``(B, T // k, d_llm)``; the last ``T % k`` frames are dropped.
        """
        b, t, c = frames.shape
        n = t // self.k
        x = frames[:, : n * self.k].reshape(b, n, self.k * c)  # B, T, C -> B, T/k, C*k
        return self.linear2(self.relu(self.linear1(x)))  # B, T/k, C*k -> B, T/k, H
