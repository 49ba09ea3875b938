"""Load a frozen Whisper encoder and its log-mel feature extractor from any HF source.

Accepts an encoder-only folder (what :func:`omnishift.models.ct2.convert_whisper_encoder` writes,
or ``WhisperEncoder.save_pretrained``) and any full Whisper checkpoint (folder or hub id such as
``openai/whisper-large-v3`` with 128 mel bins), from which only the encoder is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def _is_encoder_only(path: Path) -> bool:
    """An encoder-only folder's weights have no ``model.encoder.``/``decoder`` prefixes."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        return False
    with safe_open(str(files[0]), framework="pt") as f:
        keys = list(f.keys())
    return not any(k.startswith(("model.", "encoder.", "decoder.")) for k in keys)


def load_speech_encoder(name_or_path: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str = "eager"):
    """Load ``(WhisperEncoder, WhisperFeatureExtractor)``, eval mode, ``requires_grad=False``.

    Args:
        name_or_path: encoder-only folder, full Whisper folder, or hub id.
        dtype: weight dtype.
        attn_implementation: ``eager`` (default) matches CTranslate2's Whisper to 5e-4 on real
            speech; ``sdpa`` is faster on GPUs but drifts to ~1.4e-3 (measured on tiny.en).

    Raises:
        FileNotFoundError: a local folder lacks ``config.json`` or the feature-extractor config.
    """
    from transformers import WhisperFeatureExtractor, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    path = Path(name_or_path)
    if path.exists():
        for needed in ("config.json", "preprocessor_config.json"):
            if not (path / needed).is_file():
                raise FileNotFoundError(
                    f"{path} has no {needed}: point at a Whisper folder (save_pretrained output) or run "
                    "`omnishift models prepare` for the default encoder"
                )
    fe = WhisperFeatureExtractor.from_pretrained(str(name_or_path))
    if path.is_dir() and _is_encoder_only(path):
        encoder = WhisperEncoder.from_pretrained(str(path), dtype=dtype, attn_implementation=attn_implementation)
    else:
        encoder = WhisperModel.from_pretrained(
            str(name_or_path), dtype=dtype, attn_implementation=attn_implementation
        ).get_encoder()
    if fe.feature_size != encoder.config.num_mel_bins:
        raise ValueError(f"{name_or_path}: feature extractor has {fe.feature_size} mel bins, encoder expects "
                         f"{encoder.config.num_mel_bins}; fix preprocessor_config.json")
    return encoder.eval().requires_grad_(False), fe


def log_mel_features(feature_extractor, audios: list[np.ndarray], sampling_rate: int = 16000) -> torch.Tensor:
    """Log-mel features padded to Whisper's 30 s window: ``(B, n_mels, 3000)``."""
    return feature_extractor(
        [np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=sampling_rate,
        return_tensors="pt", padding="max_length",
    )["input_features"]


def encoder_source(path: str | Path) -> dict:
    """Where a converted encoder folder came from (empty for other folders)."""
    f = Path(path) / "omnishift_source.json"
    return json.loads(f.read_text()) if f.is_file() else {}
