"""Cheap, seeded speaker and channel variety for synthetic speech (eSpeak NG).

Why: an adaptor aligned on eSpeak NG alone learns the synthesizer, not speech; on real
recordings its CTC transcript plateaus near 47 % WER (measured, experiments/align_cpu). eSpeak itself varies
voice, variant, rate and pitch; this module adds what it cannot: vocal-tract length (speed
perturbation, which shifts formants as another speaker would), pitch contour range, room
(a synthetic reverberation tail), microphone colour (random low/high-pass) and noise at a random
SNR. Every choice comes from one ``numpy`` generator seeded per clip, so a clip is the same
bytes in any process and after any restart (the alignment set resumes bit for bit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from omnishift.models.encoder import SAMPLE_RATE  # re-exported: Whisper's input rate


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the per-clip random choices (each drawn uniformly unless said otherwise).

    Args:
        rate: eSpeak words per minute.
        pitch: eSpeak base pitch (0-100).
        variant_p: probability of a ``+variant`` speaker (else the voice's own).
        speed: speed-perturbation factor range (resampling; 1.1 = 10 % faster and higher).
        reverb_p: probability of a reverberation tail; ``rt60`` its decay time range (s).
        filter_p: probability of a random band limit (low-pass 2.5-7 kHz, high-pass 60-300 Hz).
        noise_p: probability of additive noise; ``snr_db`` its SNR range.
        gain_db: output level range (dB relative to peak 0.9).
        engines: ``(name, weight)`` synthesizers of :data:`omnishift.data.voices.ENGINES` a clip is
            spoken by (drawn with these weights); ``rate``/``pitch``/``variant_p`` are eSpeak's.
        pico_rate, pico_pitch: SVOX Pico speed and pitch in percent of normal.
        piper_rate: Piper speed in percent of normal.
        lead_silence, trail_silence: seconds of silence added before / after the speech (before
            the channel effects, so noise and reverb fill them). Why: LLaMA Questions recordings
            start 0.15-0.32 s (median 0.2 s) before the first word and end 0.4-0.5 s after it, while
            eSpeak NG starts at 0.0 s and Pico at 0.04 s; adaptors aligned without leading silence
            turn the first word of real recordings into a stray token ("Please", ".", "?").
            (0, 0): none, as sets built before these fields.
    """

    rate: tuple[int, int] = (120, 220)
    pitch: tuple[int, int] = (25, 75)
    variant_p: float = 0.8
    speed: tuple[float, float] = (0.88, 1.12)
    reverb_p: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.6)
    filter_p: float = 0.4
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (8.0, 35.0)
    gain_db: tuple[float, float] = (-12.0, 0.0)
    engines: tuple = (("espeak", 1.0),)
    pico_rate: tuple[int, int] = (75, 135)
    pico_pitch: tuple[int, int] = (70, 140)
    piper_rate: tuple[int, int] = (80, 125)
    lead_silence: tuple[float, float] = (0.0, 0.0)
    trail_silence: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        engines = tuple((str(n), float(w)) for n, w in self.engines)
        if not engines or any(w < 0 for _, w in engines) or sum(w for _, w in engines) <= 0:
            raise ValueError(f"augment engines must be (name, weight >= 0) pairs with a positive sum, got {self.engines!r}")
        object.__setattr__(self, "engines", engines)

    def to_dict(self) -> dict:
        """The fields; an eSpeak-only config omits the engine fields, so sets built before engines
        could be mixed keep their fingerprint (and resume)."""
        d = asdict(self)
        if self.engines == (("espeak", 1.0),):
            for k in ("engines", "pico_rate", "pico_pitch"):
                d.pop(k)
        if "piper" not in dict(self.engines):  # sets built before Piper keep their fingerprint
            d.pop("piper_rate")
        for k in ("lead_silence", "trail_silence"):
            if tuple(d[k]) == (0.0, 0.0):
                d.pop(k)
        return d


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster (pitch and formants move with it), by resampling."""
    from scipy.signal import resample_poly

    up = 100
    down = int(round(up * factor))
    if down == up:
        return audio
    return resample_poly(audio, up, down).astype(np.float32)


def reverb(audio: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with an exponentially decaying noise tail (a diffuse room of decay time ``rt60``)."""
    from scipy.signal import fftconvolve

    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 1.0 / max(0.05, rng.uniform(0.2, 1.0))  # direct path dominates a near microphone
    ir /= np.sqrt(np.sum(ir ** 2))
    wet = fftconvolve(audio, ir)[: len(audio) + n // 4]
    return wet.astype(np.float32)


def band_limit(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random telephone/cheap-microphone colour: 4th-order low-pass, high-pass, or both."""
    from scipy.signal import butter, sosfilt

    kind = rng.integers(3)
    out = audio
    if kind in (0, 2):
        out = sosfilt(butter(4, rng.uniform(2500, 7000), "low", fs=SAMPLE_RATE, output="sos"), out)
    if kind in (1, 2):
        out = sosfilt(butter(2, rng.uniform(60, 300), "high", fs=SAMPLE_RATE, output="sos"), out)
    return np.asarray(out, dtype=np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White, pink-ish or brown-ish noise at ``snr_db`` relative to the clip's speech power."""
    noise = rng.standard_normal(len(audio))
    colour = rng.integers(3)
    if colour == 1:  # pink-ish: one-pole low-pass mixed with white
        from scipy.signal import lfilter

        noise = 0.5 * noise + lfilter([1.0], [1.0, -0.95], noise) * 0.3
    elif colour == 2:  # brown-ish: heavier low-pass (hum / rumble)
        from scipy.signal import lfilter

        noise = lfilter([1.0], [1.0, -0.995], noise)
    p_sig = float(np.mean(audio ** 2)) + 1e-12
    p_noise = float(np.mean(noise ** 2)) + 1e-12
    return (audio + noise * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))).astype(np.float32)


def augment(audio: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Apply the channel/speaker effects of ``cfg`` to a 16 kHz clip.

    Returns:
        ``(audio, what)``: the new clip (peak-normalised to the drawn gain, within [-1, 1]) and the
        effects applied with their parameters, kept in the alignment set's item records.
    """
    what = {}
    if cfg.lead_silence != (0.0, 0.0) or cfg.trail_silence != (0.0, 0.0):  # no draw otherwise: old sets stay
        lead, trail = float(rng.uniform(*cfg.lead_silence)), float(rng.uniform(*cfg.trail_silence))
        audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32), audio,
                                np.zeros(int(trail * SAMPLE_RATE), np.float32)])
        what["lead_s"], what["trail_s"] = round(lead, 3), round(trail, 3)
    speed = float(rng.uniform(*cfg.speed))
    audio = speed_perturb(audio, speed)
    what["speed"] = round(speed, 3)
    if rng.random() < cfg.reverb_p:
        rt = float(rng.uniform(*cfg.rt60))
        audio = reverb(audio, rt, rng)
        what["rt60"] = round(rt, 3)
    if rng.random() < cfg.filter_p:
        audio = band_limit(audio, rng)
        what["filter"] = True
    if rng.random() < cfg.noise_p:
        snr = float(rng.uniform(*cfg.snr_db))
        audio = add_noise(audio, snr, rng)
        what["snr_db"] = round(snr, 1)
    gain = 10 ** (float(rng.uniform(*cfg.gain_db)) / 20)
    peak = float(np.max(np.abs(audio))) or 1.0
    return np.clip(audio * (0.9 * gain / peak), -1.0, 1.0).astype(np.float32), what


def parse_engines(spec: str) -> tuple:
    """``"espeak=3,pico=1"`` -> ``(("espeak", 3.0), ("pico", 1.0))`` (a bare name weighs 1)."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("=")
        try:
            out.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"engines: weight of {name!r} is not a number ({weight!r}); e.g. espeak=3,pico=1")
    return tuple(out)
