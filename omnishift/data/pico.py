"""SVOX Pico text-to-speech (optional ``ttspico`` package): two natural-sounding English voices.

Why a second synthesizer: an adaptor aligned on eSpeak NG's formant voices alone learns that
synthesizer; SVOX Pico is a concatenative/HMM engine (Android's former offline TTS) whose voices
(``en-US`` and ``en-GB``, both female) sound much closer to recorded speech. ``ttspico`` on PyPI
bundles the engine's C sources and its language files, so it works offline; it is an sdist, so
installing it compiles C (~20 s, needs a C compiler): it is the optional extra ``omnishift[pico]``,
never needed by the default install.

Determinism: one engine keeps state between utterances (the same sentence spoken twice by one
engine differs, measured), while a fresh engine per call gives identical samples (engine creation
costs ~2 ms), so :func:`synthesize_pico` creates one per call.
"""

from __future__ import annotations

import numpy as np

PICO_VOICES = ("en-US", "en-GB")
RATE_RANGE = (20, 500)  # percent of the voice's normal speed (ttspico's accepted limits)
PITCH_RANGE = (50, 200)  # percent of the voice's normal pitch


def pico_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ttspico") is not None


def synthesize_pico(text: str, voice: str = "en-US", rate: int = 100, pitch: int = 100) -> np.ndarray:
    """Speak ``text`` with SVOX Pico: float32 samples in [-1, 1] at 16 kHz.

    Args:
        text: what to say (plain text; Pico expands numbers and abbreviations itself).
        voice: ``en-US`` or ``en-GB``.
        rate: speed in percent of normal (20-500).
        pitch: pitch in percent of normal (50-200).

    Raises:
        ImportError: ``ttspico`` is not installed (the message says how to install it).
        ValueError: an unknown voice, a rate or pitch out of range, or text that gives no audio.
    """
    try:
        import ttspico
    except ImportError as e:
        raise ImportError("SVOX Pico voices need the optional ttspico package: pip install 'omnishift[pico]' "
                          "(compiles SVOX Pico's C sources, ~20 s, needs a C compiler)") from e
    if voice not in PICO_VOICES:
        raise ValueError(f"unknown SVOX Pico voice {voice!r}: use one of {PICO_VOICES}")
    for name, v, (lo, hi) in (("rate", rate, RATE_RANGE), ("pitch", pitch, PITCH_RANGE)):
        if not lo <= int(v) <= hi:
            raise ValueError(f"SVOX Pico {name} must be in {lo}..{hi} (percent), got {v!r}")
    text = " ".join(text.replace("<", " ").replace(">", " ").split())  # "<...>" is Pico's markup
    if not text:
        raise ValueError("text is empty: nothing to synthesize")
    engine = ttspico.TtsEngine(voice)
    engine.rate, engine.pitch = int(rate), int(pitch)
    chunks: list[bytes] = []
    engine.speak(text, lambda _fmt, audio, _fin: chunks.append(audio) or True)
    pcm = np.frombuffer(b"".join(chunks), dtype=np.int16)
    if pcm.size == 0:
        raise ValueError(f"SVOX Pico produced no audio for {text[:60]!r}")
    return (pcm.astype(np.float32) / 32768.0)
