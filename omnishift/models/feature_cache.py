"""On-disk cache of frozen-encoder outputs, so later epochs and runs skip the Whisper encoder.

The encoder is frozen in every training method, so its output for a clip never changes: it is
computed once under the model's window policy (the 30 s window, or the clip's own window for
``clip``), cut to the frames the frame policy keeps, and stored as one small safetensors file per
clip. The key hashes the audio samples, the encoder's identity (its config and every weight), the
window and the kept frame count, so a different encoder, policy or clip can never be served a stale
entry; an unreadable or mismatched file is recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def encoder_identity(encoder) -> str:
    """sha256 of the encoder's config and weights (computed once per cache)."""
    from omnishift.fingerprint import weights_sha256

    return weights_sha256(encoder)


class EncoderFeatureCache:
    """Serve ``(frames, C)`` encoder states per clip from ``root``, computing misses in batches.

    Args:
        root: cache folder (shared across runs; safe to delete).
        model: a :class:`~omnishift.models.speech_llm.SpeechLLM` (its encoder, feature extractor
            and frame policy define what is cached).
        batch_size: clips encoded per forward on a miss.
    """

    def __init__(self, root: str | Path, model, batch_size: int = 8):
        from omnishift.paths import ensure_writable_dir

        self.root = ensure_writable_dir(root, "feature cache")
        self.model = model
        self.batch_size = batch_size
        self.identity = encoder_identity(model.encoder)
        # the same frame count means different states under a 30 s window and a clip window
        self.window = "clip" if model.processor.frame_policy.short_window else "30s"
        self.hits = self.misses = 0

    def path(self, audio: np.ndarray, frames: int) -> Path:
        h = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
        h.update(f"{self.identity}:{self.window}:{frames}".encode())
        key = h.hexdigest()
        return self.root / key[:2] / f"{key}.safetensors"

    def _load(self, path: Path, frames: int) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            states = load_file(path)["states"]
        except Exception as e:  # a torn or foreign file: recompute rather than fail the run
            log.warning("feature cache entry %s unreadable (%s); recomputing", path, e)
            return None
        return states if states.shape[0] == frames else None

    @torch.no_grad()
    def states(self, audios: list[np.ndarray]) -> list[Path]:
        """Cache files holding each clip's kept encoder states (computing the missing ones)."""
        policy = self.model.processor.frame_policy
        frames = [policy.encoder_frames(len(a)) for a in audios]
        paths = [self.path(a, f) for a, f in zip(audios, frames)]
        todo = [i for i, (p, f) in enumerate(zip(paths, frames)) if self._load(p, f) is None]
        self.hits += len(audios) - len(todo)
        self.misses += len(todo)
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            out = self.model.encode_audio([audios[i] for i in chunk])  # [(frames_i, C)]
            for row, i in enumerate(chunk):
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                tmp = paths[i].with_name(f".{paths[i].name}.{os.getpid()}.tmp")  # processes may share a cache
                save_file({"states": out[row].contiguous().cpu()}, tmp,
                          metadata={"encoder": self.identity, "frames": str(frames[i])})
                tmp.replace(paths[i])
        return paths

    def attach(self, items: list[dict]) -> list[dict]:
        """Items with ``audio`` replaced by ``encoder_states`` (a cache path the processor loads)."""
        speech = [i for i, it in enumerate(items) if it.get("audio") is not None]
        paths = self.states([items[i]["audio"] for i in speech])
        out = [dict(it) for it in items]
        for i, p in zip(speech, paths):
            out[i].pop("audio")
            out[i]["encoder_states"] = p
        return out
