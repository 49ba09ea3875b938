"""Audio in, 16 kHz mono float32 out, or an error that names the item and the fix.

Whisper needs 16 kHz mono and sees at most 30 s; anything else in a training or evaluation set is
a data bug that should stop the run with the item's name (or be skipped and counted when the user
asks, see :class:`omnishift.data.manifest.SkipReport`), never be silently cut or dropped.
"""

from __future__ import annotations

import io
import re
from math import gcd
from pathlib import Path

import numpy as np

from omnishift.models.encoder import SAMPLE_RATE  # re-exported: Whisper's input rate

MAX_SECONDS = 30.0
#: peak below which a clip is digital silence (about 3 steps of 16-bit PCM): nothing can be heard in it
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """Unusable audio; the message names the item and how to fix it."""


def _read(source, label: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if isinstance(source, dict):
        if source.get("array") is not None:
            if source.get("sampling_rate") is None:
                raise AudioError(f"{label}: audio array without 'sampling_rate'; add the rate of the samples")
            return np.asarray(source["array"], dtype=np.float32), int(source["sampling_rate"])
        if source.get("bytes"):
            return _read(source["bytes"], label)
        if source.get("path"):
            return _read(source["path"], label)
        raise AudioError(f"{label}: audio dict has neither 'array', 'bytes' nor 'path'")
    if isinstance(source, (bytes, bytearray)):
        handle, where = io.BytesIO(source), "audio bytes"
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{label}: audio file {path} not found; check the manifest's audio path "
                             "(relative paths resolve against the manifest's folder)")
        handle, where = path, str(path)
    try:
        with sf.SoundFile(handle) as f:
            _check_not_truncated(f.extra_info, label, where)
            data, sr = f.read(dtype="float32", always_2d=True), f.samplerate  # T, C
    except AudioError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{label}: cannot decode {where} ({e}); re-encode it as 16-bit PCM WAV or FLAC") from None
    return _downmix(data, label, where), sr


_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)


def _check_not_truncated(info: str, label: str, where: str) -> None:
    """A WAV whose data chunk claims more bytes than the file holds was cut off (a partial copy or
    download); libsndfile reads the part that is there without a word, so refuse it. Streaming
    writers' placeholder sizes (0, 0xFFFFFFFF) are not truncation."""
    m = _DATA_SIZE.search(info)
    if m:
        claimed, present = int(m.group(1)), int(m.group(2))
        if present < claimed and claimed not in (0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF - 8):
            raise AudioError(f"{label}: {where} is truncated: its header promises {claimed} bytes of audio but "
                             f"only {present} are there ({100 * present / claimed:.0f}%); copy or download it again")


def _downmix(data: np.ndarray, label: str, where: str) -> np.ndarray:
    """``(T, C)`` -> ``(T,)`` by averaging channels, refusing channels that cancel: anti-phase
    stereo averages to near silence, which would be read as a silent clip."""
    mono = data.mean(axis=1)  # T, C -> T
    if data.shape[1] > 1:
        channel_rms = float(np.sqrt(np.mean(data ** 2)))
        if channel_rms > 1e-3 and float(np.sqrt(np.mean(mono ** 2))) < 0.1 * channel_rms:
            raise AudioError(f"{label}: the {data.shape[1]} channels of {where} cancel when mixed to mono "
                             "(anti-phase); keep one channel, e.g. ffmpeg -i IN -af pan=mono|c0=c0 OUT.wav")
    return mono


def resample(audio: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling to ``target`` Hz (exact ratio up/down reduced by their gcd)."""
    if sr == target:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(sr, target)
    return resample_poly(audio, target // g, sr // g).astype(np.float32)


def load_audio(source, *, item: str | None = None, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Read audio as float32 mono at 16 kHz and validate it.

    Args:
        source: a path, raw file bytes, or an HF-style dict (``{"array", "sampling_rate"}`` or
            ``{"bytes", "path"}``).
        item: the item's id, used in error messages.
        max_seconds: longest accepted clip (Whisper's window is 30 s).

    Digital silence is read (a silent clip is a legitimate, if unanswerable, input) with a warning
    naming the item: Whisper "transcribes" silence as a word ("you"), so it would otherwise pass as
    a question; evaluation also counts such items in its summary (:func:`is_silent`).

    Raises:
        AudioError: missing/undecodable file, zero samples (an empty file), NaN/inf samples, or
            longer than ``max_seconds``.
    """
    label = f"item {item!r}" if item is not None else "audio"
    audio, sr = _read(source, label)
    if audio.ndim > 1:
        audio = audio.mean(axis=-1) if audio.shape[-1] <= 8 else audio.mean(axis=0)
    if audio.size == 0:
        raise AudioError(f"{label}: audio is empty (0 samples); re-record or drop the item")
    if not np.isfinite(audio).all():
        raise AudioError(f"{label}: audio contains NaN or infinite samples; re-encode the file")
    seconds = audio.size / sr
    if seconds > max_seconds:
        raise AudioError(f"{label}: audio is {seconds:.1f} s, longer than the {max_seconds:g} s Whisper window; "
                         "trim or split the clip")
    if is_silent(audio):
        import logging

        logging.getLogger(__name__).warning("%s: audio is digital silence (%.1f s, peak %.1e): nothing in it can be "
                                            "heard; check the recording", label, seconds, float(np.abs(audio).max()))
    return resample(audio, sr)


def is_silent(audio: np.ndarray) -> bool:
    """Whether a clip is digital silence (peak below :data:`SILENCE_PEAK`)."""
    return audio.size > 0 and float(np.abs(audio).max()) < SILENCE_PEAK


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    import soundfile as sf

    return float(sf.info(str(path)).duration)


def wav_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV bytes of a float array in [-1, 1] (clipped), for atomic writes.

    The int16 conversion is ours (round, clip) rather than libsndfile's, so the same samples give
    the same bytes whatever library version writes them.
    """
    import soundfile as sf

    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"wav_bytes wants mono 1-D samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("wav_bytes: samples contain NaN or inf")
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, int(sr), format="WAV", subtype="PCM_16")
    return buf.getvalue()
