"""On-disk cache of beam-decoded CTC tokens per clip (``speech_input: ctc_top1`` with ``ctc_decoding``).

Why: reading a clip's CTC path with beam search and the LLM as language model costs ~2 s a clip
on one core, against ~1 ms greedy. Stage 1 under compressed input trains the LLM only, and the
decoder's language model is the frozen base LLM (:meth:`SpeechLLM.prior_llm`), so a clip's
tokens depend on its encoder states, the adaptor, the decoding settings and the base LLM alone:
they are decoded once and then shared by every epoch, method and evaluation.

The key hashes the encoder states (which already carry the audio, encoder and window: see
:mod:`omnishift.models.feature_cache`) with the identity of everything else, so a changed
adaptor, setting or LLM is never served a stale entry; an unreadable or foreign file is decoded
again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def decoder_identity(model) -> str:
    """sha256 over what a clip's beam-decoded tokens depend on besides its encoder states."""
    from omnishift.fingerprint import weights_sha256

    what = {"adaptor": weights_sha256(model.adaptor), "prior": weights_sha256(model.prior_llm()),
            "k": model.config.k, "decoding": dataclasses.asdict(model.beam_settings) if model.beam_settings else None,
            "version": 2}  # the resolved settings, defaults included: a changed default is another identity
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


class CTCTokenCache:
    """Serve and store one clip's decoded token ids, one small JSON file per clip under ``root``.

    The identity is taken when the cache is made: under ``ctc_top1`` the adaptor gets no gradient
    and the prior is a frozen copy, so it cannot change while the cache is in use.

    Args:
        root: cache folder (shared across runs and processes; safe to delete).
        model: the :class:`~omnishift.models.speech_llm.SpeechLLM` whose tokens are cached.
    """

    def __init__(self, root: str | Path, model):
        self.root = Path(root)
        self.identity = decoder_identity(model)
        self.hits = self.misses = 0

    def path(self, states: torch.Tensor) -> Path:
        h = hashlib.sha256(states.detach().float().contiguous().cpu().numpy().tobytes())
        h.update(f"{tuple(states.shape)}:{self.identity}".encode())
        key = h.hexdigest()
        return self.root / key[:2] / f"{key}.json"

    def get(self, states: torch.Tensor) -> list[int] | None:
        """The clip's cached tokens, or None (counted as a miss)."""
        p = self.path(states)
        try:
            entry = json.loads(p.read_text(encoding="utf-8"))
            tokens = entry["tokens"] if entry.get("identity") == self.identity else None
        except FileNotFoundError:
            tokens = None
        except (ValueError, KeyError, TypeError) as e:  # torn or foreign: decode again rather than fail
            log.warning("CTC token cache entry %s unreadable (%s); decoding again", p, e)
            tokens = None
        if tokens is None or not all(isinstance(t, int) for t in tokens):
            self.misses += 1
            return None
        self.hits += 1
        return tokens

    def put(self, states: torch.Tensor, tokens: list[int]) -> None:
        """Store one clip's tokens atomically (processes may share the folder)."""
        p = self.path(states)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "tokens": [int(t) for t in tokens]}), encoding="utf-8")
        tmp.replace(p)
