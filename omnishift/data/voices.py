"""Synthesizers of synthetic speech: one registry, :data:`ENGINES`, mapping a name to an
:class:`Engine` that lists its offline voices, draws a clip's voice/rate/pitch and speaks.

* ``espeak``: eSpeak NG (always installed): many English voices x 100+ ``+variant`` speakers,
  formant synthesis (robotic, very varied).
* ``pico``: SVOX Pico (optional ``omnishift[pico]``): two natural-sounding English voices
  (:mod:`omnishift.data.pico`).
* ``piper``: Piper (optional ``omnishift[piper]``): a neural VITS voice (:mod:`omnishift.data.piper_tts`).

An alignment set mixes engines with the weights in :attr:`AugmentConfig.engines`; spoken
instructions do the same through :class:`SpeakerMix` (``data.engines``), so Stage 1 hears many
speakers rather than one eSpeak voice. A clip's voice
name carries its engine (``pico:en-US``; eSpeak voices stay bare, as in sets built before this
registry), so :func:`engine_of` finds it again. Adding a synthesizer is one file with its
``voices``/``plan``/``speak`` and one line in :data:`ENGINES`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from omnishift.data.augment import AugmentConfig, augment, parse_engines


class Engine(NamedTuple):
    """``voices()``: the engine's offline voices (may raise ImportError naming the install);
    ``plan(rng, voices, aug)``: the clip's ``{"voice", "rate", "pitch"}`` drawn from ``rng``;
    ``speak(text, plan)``: float32 16-kHz samples (ValueError for text it cannot speak)."""

    voices: Callable[[], list[str]]
    plan: Callable[[np.random.Generator, list[str], AugmentConfig], dict]
    speak: Callable[[str, dict], np.ndarray]


# ---- eSpeak NG -------------------------------------------------------------------------------
def _espeak_voices() -> list[str]:
    """English voices, each alone and with every ``+variant`` (a voice is ``name`` or ``name+variant``)."""
    from omnishift.data.espeak import _engine, list_voices

    voices = [v for v in list_voices() if (v == "en" or v.startswith("en-")) and v != "en-shaw"]  # Shavian script
    variants = sorted(p.name for p in (_engine().data_path / "voices" / "!v").iterdir() if p.is_file())
    return voices + [f"+{v}" for v in variants]


def _espeak_plan(rng: np.random.Generator, voices: list[str], aug: AugmentConfig) -> dict:
    base = [v for v in voices if not v.startswith("+")]
    variants = [v for v in voices if v.startswith("+")]
    voice = base[rng.integers(len(base))]
    if rng.random() < aug.variant_p:
        voice += variants[rng.integers(len(variants))]
    return {"voice": voice, "rate": int(rng.integers(aug.rate[0], aug.rate[1] + 1)),
            "pitch": int(rng.integers(aug.pitch[0], aug.pitch[1] + 1))}


def _espeak_speak(text: str, plan: dict) -> np.ndarray:
    from omnishift.data.espeak import SynthConfig, synthesize

    return synthesize(text, SynthConfig(**plan))


# ---- SVOX Pico -------------------------------------------------------------------------------
def _pico_voices() -> list[str]:
    from omnishift.data.pico import PICO_VOICES, pico_available, synthesize_pico

    if not pico_available():
        synthesize_pico("x")  # raises the ImportError that says how to install it
    return [f"pico:{v}" for v in PICO_VOICES]


def _pico_plan(rng: np.random.Generator, voices: list[str], aug: AugmentConfig) -> dict:
    return {"voice": voices[rng.integers(len(voices))],
            "rate": int(rng.integers(aug.pico_rate[0], aug.pico_rate[1] + 1)),
            "pitch": int(rng.integers(aug.pico_pitch[0], aug.pico_pitch[1] + 1))}


def _pico_speak(text: str, plan: dict) -> np.ndarray:
    from omnishift.data.pico import synthesize_pico

    return synthesize_pico(text, plan["voice"].split(":", 1)[1], plan["rate"], plan["pitch"])


# ---- Piper (neural) ---------------------------------------------------------------------------
def _piper_voices() -> list[str]:
    from omnishift.data.piper_tts import PIPER_VOICES, piper_available, synthesize_piper

    if not piper_available():
        synthesize_piper("x")  # raises the ImportError that says how to install it
    return [f"piper:{v}" for v in PIPER_VOICES]


def _piper_plan(rng: np.random.Generator, voices: list[str], aug: AugmentConfig) -> dict:
    # pitch: Piper has no pitch control (100 %); the set's speed perturbation shifts it
    return {"voice": voices[rng.integers(len(voices))],
            "rate": int(rng.integers(aug.piper_rate[0], aug.piper_rate[1] + 1)), "pitch": 100}


def _piper_speak(text: str, plan: dict) -> np.ndarray:
    from omnishift.data.piper_tts import synthesize_piper

    return synthesize_piper(text, plan["voice"].split(":", 1)[1], plan["rate"])


ENGINES: dict[str, Engine] = {
    "espeak": Engine(_espeak_voices, _espeak_plan, _espeak_speak),
    "pico": Engine(_pico_voices, _pico_plan, _pico_speak),
    "piper": Engine(_piper_voices, _piper_plan, _piper_speak),
}


def engine_of(voice: str) -> str:
    """The engine of a clip's voice name (``pico:en-US`` -> ``pico``; a bare name is eSpeak's)."""
    return voice.split(":", 1)[0] if ":" in voice else "espeak"


def engine_voices(aug: AugmentConfig) -> dict[str, list[str]]:
    """The voices of every engine ``aug`` draws from (unknown names: a clear error)."""
    unknown = sorted(name for name, _ in aug.engines if name not in ENGINES)
    if unknown:
        raise ValueError(f"unknown synthesizer(s) {unknown} in augment engines; valid: {sorted(ENGINES)}")
    return {name: ENGINES[name].voices() for name, w in aug.engines if w > 0}


def clip_plan(index: int, seed: int, voices: dict[str, list[str]], aug: AugmentConfig) -> tuple[dict, np.random.Generator]:
    """Voice, rate and pitch of clip ``index`` and the generator its effects then draw from.

    Everything follows from ``(seed, index)``. With one engine no engine draw is made, so an
    eSpeak-only set gets the same clips as sets built before engines could be mixed.
    """
    rng = np.random.default_rng([seed, index])
    names = [name for name, w in aug.engines if w > 0]
    name = names[0]
    if len(names) > 1:
        w = np.array([w for _, w in aug.engines if w > 0], dtype=np.float64)
        name = names[int(rng.choice(len(names), p=w / w.sum()))]
    return ENGINES[name].plan(rng, voices[name], aug), rng


def speak_clip(text: str, index: int, seed: int, voices: dict[str, list[str]],
               aug: AugmentConfig, effects: bool = True) -> tuple[np.ndarray, dict, dict]:
    """Clip ``index`` of a synthetic set: drawn voice, spoken, then (``effects``) the channel effects.

    Returns:
        ``(audio, plan, effects applied)``; everything follows from ``(seed, index)``.

    Raises:
        ValueError: a text the drawn engine cannot speak.
    """
    plan, rng = clip_plan(index, seed, voices, aug)
    audio = ENGINES[engine_of(plan["voice"])].speak(text, plan)
    if not effects:
        return audio, plan, {}
    audio, what = augment(audio, aug, rng)
    return audio, plan, what


@dataclass(frozen=True)
class SpeakerMix:
    """Many speakers for spoken instructions: each clip's engine, voice, rate, pitch and (``effects``)
    channel effects drawn from ``seed`` and the clip's id, as in the alignment sets.

    Why by id and not by position: the same instruction gets the same speaker whatever else the
    set holds or in which order it is read, so a resumed or re-limited set reuses its WAVs.

    Args:
        engines: ``"espeak=2,pico=1,piper=1"``, weights of :data:`ENGINES` (pico and piper need the
            ``omnishift[pico]`` / ``omnishift[piper]`` extras).
        seed: the draw's seed.
        effects: speed, reverberation, band limit, noise and gain (:class:`AugmentConfig`'s ranges).
    """

    engines: str = "espeak=1"
    seed: int = 0
    effects: bool = True

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(engines=parse_engines(self.engines))

    def speaker(self) -> Callable[[str, str], np.ndarray]:
        """``speak(text, clip_id) -> 16-kHz float32``; every engine's voices are listed once, here
        (an engine that is not installed fails now, naming its install)."""
        aug = self.augment_config()
        voices = engine_voices(aug)

        def speak(text: str, clip_id: str) -> np.ndarray:
            index = int(hashlib.sha256(clip_id.encode("utf-8")).hexdigest()[:12], 16)
            return speak_clip(text, index, self.seed, voices, aug, self.effects)[0]

        return speak
