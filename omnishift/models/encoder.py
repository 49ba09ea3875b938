"""Load a frozen Whisper encoder and its log-mel feature extractor from any HF source.

Accepts an encoder-only folder (what :func:`omnishift.models.ct2.convert_whisper_encoder` writes,
or ``WhisperEncoder.save_pretrained``) and any full Whisper checkpoint (folder or hub id such as
``openai/whisper-large-v3`` with 128 mel bins), from which only the encoder is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

#: Whisper's input rate; every clip in the project is resampled to it (the one place it is written).
SAMPLE_RATE = 16000


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


def log_mel_features(feature_extractor, audios: list[np.ndarray], sampling_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Log-mel features padded to Whisper's 30 s window: ``(B, n_mels, 3000)``."""
    return feature_extractor(
        [np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=sampling_rate,
        return_tensors="pt", padding="max_length",
    )["input_features"]


@torch.no_grad()
def encode_window(encoder, features: torch.Tensor) -> torch.Tensor:
    """Run a Whisper encoder on a log-mel window shorter than 30 s: ``(1, n_mels, 2F) -> (1, F, C)``.

    Why: ``WhisperEncoder.forward`` insists on the full 3000-frame window, so a 3 s question costs
    as much as 30 s of audio (0.6 s per clip on 2 cores for tiny.en). The encoder itself has no
    such limit: the convolutions are length-agnostic and the positional table is sliced to the
    first ``F`` rows, exactly what CTranslate2's ``encode`` does with a short mel input (the
    reference the tests compare against). Ultravox trims Whisper's input the same way.

    Args:
        encoder: a ``WhisperEncoder`` (eval mode).
        features: ``(B, n_mels, 2F)`` log-mel frames; every row must hold real frames of its clip
            (no attention mask is applied), so callers batch clips of equal length or pass one.

    Returns:
        ``(B, F, C)`` last hidden states.
    """
    import torch.nn.functional as F

    if features.shape[-1] % 2 or features.shape[-1] > 2 * encoder.config.max_source_positions:
        raise ValueError(f"mel window of {features.shape[-1]} frames: need an even count up to "
                         f"{2 * encoder.config.max_source_positions}")
    x = F.gelu(encoder.conv1(features.to(encoder.conv1.weight.dtype)))  # B, n_mels, 2F -> B, C, 2F
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)  # B, C, 2F -> B, F, C (stride 2)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        out = layer(x, None)  # no mask: every row is real frames (as WhisperEncoder.forward passes)
        x = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(x)


@torch.no_grad()
def encode_kept(encoder, features: torch.Tensor, frames: torch.Tensor, short_window: bool) -> torch.Tensor:
    """Encoder states of the frames a frame policy keeps.

    Args:
        encoder: the frozen ``WhisperEncoder``.
        features: ``(N, n_mels, 3000)`` log-mel features (30 s window, as the processor makes them).
        frames: ``(N,)`` encoder frames kept per clip.
        short_window: encode each clip's own window (``clip`` policy) instead of the 30 s window.

    Returns:
        ``(N, max(frames), C)``; rows past a clip's own count are padding (zeros under ``clip``).
    """
    keep = int(frames.max())
    if not short_window:
        return encoder(features.to(encoder.dtype)).last_hidden_state[:, :keep]  # N, 1500, C -> N, keep, C
    out = features.new_zeros(features.shape[0], keep, encoder.config.d_model, dtype=encoder.dtype)
    for i, f in enumerate(frames.tolist()):  # one clip at a time: no attention mask needed
        out[i, :f] = encode_window(encoder, features[i:i + 1, :, : 2 * f])[0]  # 1, n_mels, 2f -> f, C
    return out


def encode_clips(encoder, feature_extractor, policy, audios: list) -> list[torch.Tensor]:
    """Kept encoder states per clip, ``[(frames_i, C)]``, under a :class:`~omnishift.models.processor.FramePolicy`.

    Under ``clip`` the log-mel is computed only over the kept window (the clip zero-padded to it):
    the same values as the 30-s window's first frames (its tail is zeros too, and the log-mel floor
    is set by the loudest frame, which lies in the clip) at a tenth of the cost.
    """
    frames = torch.tensor([policy.encoder_frames(len(a)) for a in audios], dtype=torch.long)
    if policy.short_window:
        n = 2 * int(frames.max()) * feature_extractor.hop_length + feature_extractor.hop_length  # samples
        padded = [np.pad(np.asarray(a, dtype=np.float32), (0, max(0, n - len(a)))) for a in audios]
        feats = feature_extractor(padded, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                  padding="longest")["input_features"]  # N, n_mels, >= 2 max(frames)
    else:
        feats = log_mel_features(feature_extractor, audios)  # N, n_mels, 3000
    states = encode_kept(encoder, feats, frames, policy.short_window)
    return [states[i, :f] for i, f in enumerate(frames.tolist())]
