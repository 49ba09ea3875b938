"""Spoken manifests: every row's text to a 16-kHz WAV with eSpeak NG (:mod:`omnishift.data.espeak`),
resumable and keyed by the text each WAV speaks, plus :func:`ensure_audio` for rows without audio.

The engine itself (ctypes, determinism) lives in :mod:`omnishift.data.espeak`; its public names are
re-exported here for the callers that speak one text at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from omnishift.data.espeak import (_CONTROL_RE, PITCH_RANGE, RATE_RANGE, SynthConfig, _engine, list_voices,
                                   synthesize)

__all__ = ["PITCH_RANGE", "RATE_RANGE", "SynthConfig", "list_voices", "synthesize", "write_wav", "synth_manifest",
           "ensure_audio", "MAX_SECONDS", "SAMPLE_RATE"]
from omnishift.models.encoder import SAMPLE_RATE  # re-exported: Whisper's input rate
from omnishift.paths import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

MAX_SECONDS = 30.0  # Whisper's input window: longer prompts would be cut
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def write_wav(path: str | os.PathLike, samples: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write mono samples as a 16-bit PCM WAV, atomically (temp file in the same folder, rename).

    Atomic so that an interrupted run never leaves a truncated WAV that a resumed
    :func:`synth_manifest` would take as done.

    Args:
        path: the WAV to write; parent folders are created.
        samples: 1-D float array in [-1, 1] (values beyond are clipped).
        sr: sample rate in Hz.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: samples that are not 1-D or not finite.
    """
    from omnishift.data.audio import wav_bytes

    return atomic_write_bytes(path, wav_bytes(samples, sr))


def _read_manifest(in_path: Path, text_field: str) -> list[tuple[int, dict, str, str]]:
    """(line number, row, file-safe id, text) per non-blank line; every problem in one ValueError."""
    rows, problems, seen = [], [], {}
    with open(in_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: not valid JSON ({e.msg}); write one JSON object per line")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {n}: a JSON {type(row).__name__}, not an object; write one object per line")
                continue
            rid = row.get("id")
            if isinstance(rid, int) and not isinstance(rid, bool):
                rid = str(rid)
            if not isinstance(rid, str) or not _ID_RE.fullmatch(rid):
                problems.append(f"line {n}: id {row.get('id')!r} is missing or unsafe as a file name; "
                                "use 1-200 characters from A-Z a-z 0-9 . _ - starting with a letter or digit")
                continue
            if rid in seen:
                problems.append(f"line {n}: id {rid!r} repeats line {seen[rid]}; ids must be unique "
                                "(each names its WAV)")
                continue
            seen[rid] = n
            text = row.get(text_field)
            if not isinstance(text, str) or not _CONTROL_RE.sub(" ", text).strip():
                problems.append(f"line {n} (id {rid!r}): field {text_field!r} is missing or empty; give the text "
                                "to speak there, or pass text_field= naming the field that holds it")
                continue
            rows.append((n, row, rid, text))
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(f"{in_path}: bad rows{more}:\n  " + "\n  ".join(problems[:10]))
    return rows


def synth_manifest(
    in_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: SynthConfig = SynthConfig(),
    text_field: str = "text",
    overwrite: bool = False,
    progress: bool = True,
    max_seconds: float | None = MAX_SECONDS,
) -> Path:
    """Speak every row of a JSONL manifest into ``out_dir/wavs/<id>.wav`` and write a new manifest.

    Resumable: WAVs already in ``out_dir/wavs`` are reused unless ``overwrite``, and every file is
    written atomically, so rerunning after an interruption only synthesises what is missing (and,
    synthesis being deterministic, gives the same bytes as one uninterrupted run). The voice, rate,
    pitch and text field are kept in ``out_dir/synth_config.json``; resuming with different ones is
    refused, since it would mix two configurations. ``out_dir/texts.json`` records which text each
    WAV speaks, so a row whose text changed (or another source's row with the same id) is spoken
    again instead of reusing the old clip.

    Args:
        in_path: JSONL, one object per line with a unique ``id`` (letters, digits, ``. _ -``) and
            the text in ``text_field``. Instruction data (``{"id", "instruction", "input",
            "output", "self_contained"}``) works with ``text_field="instruction"``; only the
            instruction is spoken, so keep rows whose ``self_contained`` is true if the spoken
            prompt must stand alone.
        out_dir: output folder, created if needed.
        config: one eSpeak voice, rate and pitch (:class:`SynthConfig`), or a
            :class:`~omnishift.data.voices.SpeakerMix` of engines and voices drawn per row id.
        text_field: the field to speak.
        overwrite: re-synthesise WAVs that already exist.
        progress: show a tqdm progress bar.
        max_seconds: longest audio allowed (Whisper sees 30 s); None for no limit.

    Returns:
        ``out_dir/manifest.jsonl``: the input rows, in order, each with ``audio`` (the WAV's path
        relative to the manifest's folder, ``wavs/<id>.wav``, so the folder can be moved),
        ``duration`` (seconds, 3 decimals) and ``sample_rate`` (16000) set.

    Raises:
        FileNotFoundError: ``in_path`` is missing or a folder.
        ValueError: no rows; bad rows (every one named by line number, with the fix), an unknown voice, a
            resume with another configuration, or audio longer than ``max_seconds`` (ids named;
            those WAVs are not written, the others are, and no manifest is written).
    """
    in_path, out_dir = Path(in_path), Path(out_dir)
    if not in_path.is_file():
        raise FileNotFoundError(f"{in_path} is {'a folder' if in_path.is_dir() else 'not found'}: give the JSONL "
                                "manifest whose rows to speak (one object per line with id and text)")
    rows = _read_manifest(in_path, text_field)
    if not rows:
        raise ValueError(f"{in_path} has no rows: nothing to synthesize (no manifest written)")
    speak, settings = _speaker(config)
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    _record_settings(out_dir, {**settings, "text_field": text_field}, rows, overwrite)
    out_rows, too_long = _speak_rows(rows, out_dir, speak, overwrite, progress, max_seconds)
    if too_long:
        more = f" (and {len(too_long) - 10} more)" if len(too_long) > 10 else ""
        raise ValueError(f"{len(too_long)} prompt(s) longer than {max_seconds:g} s, Whisper's window{more}: "
                         + "; ".join(too_long[:10])
                         + ". Shorten or drop those rows, raise SynthConfig.rate, or pass max_seconds=None")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows)
    return atomic_write_text(out_dir / "manifest.jsonl", lines)


def _speaker(config) -> tuple:
    """``(speak(text, clip_id) -> samples, settings to record)`` for one eSpeak voice
    (:class:`SynthConfig`) or many speakers (:class:`omnishift.data.voices.SpeakerMix`)."""
    from omnishift.data.voices import SpeakerMix

    if isinstance(config, SpeakerMix):
        return config.speaker(), {"speakers": asdict(config)}
    _engine().check_voice(config.voice)
    return (lambda text, clip_id: synthesize(text, config)), asdict(config)


def _record_settings(out_dir: Path, settings: dict, rows: list, overwrite: bool) -> None:
    """Keep the voice settings in ``synth_config.json``; refuse to mix WAVs of other settings."""
    cfg_path, wav_dir = out_dir / "synth_config.json", out_dir / "wavs"
    if cfg_path.exists() and not overwrite:
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        old = {k: old.get(k) for k in settings}
        if old != settings and any((wav_dir / f"{rid}.wav").exists() for _, _, rid, _ in rows):
            raise ValueError(f"{out_dir} holds WAVs made with {old}, not {settings}: pass overwrite=True "
                             "(--overwrite) to redo them, or choose another out_dir")
    atomic_write_text(cfg_path, json.dumps({**settings, "espeak_ng": _engine().version or None,
                                            "sample_rate": SAMPLE_RATE}, indent=2) + "\n")


def _speak_rows(rows: list, out_dir: Path, speak, overwrite: bool, progress: bool,
                max_seconds: float | None) -> tuple[list[dict], list[str]]:
    """Speak (or reuse) each row's WAV; returns the manifest rows and the too-long ones, named.

    ``texts.json`` says which text each WAV speaks: a WAV is reused only for the same text (an
    edited question, or two sources sharing a folder, paired an old clip with a new text by id alone).
    """
    from tqdm import tqdm

    wav_dir, index_path = out_dir / "wavs", out_dir / "texts.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {}
    out_rows, too_long, made, reused, changed = [], [], 0, 0, []
    for i, (n, row, rid, text) in enumerate(tqdm(rows, desc="synth", unit="utt", disable=not progress)):
        wav = wav_dir / f"{rid}.wav"
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        if index.get(rid) not in (None, key) and wav.exists():
            changed.append(rid)
        frames = None if overwrite or index.get(rid) != key else _existing_frames(wav)
        reused += frames is not None
        index[rid] = key
        if i % 256 == 255:
            atomic_write_text(index_path, json.dumps(index, sort_keys=True) + "\n")
        if frames is None:
            audio = speak(text, rid)
            frames = len(audio)
            if max_seconds is None or frames <= max_seconds * SAMPLE_RATE:
                write_wav(wav, audio)
                made += 1
        duration = frames / SAMPLE_RATE
        if max_seconds is not None and duration > max_seconds:
            too_long.append(f"id {rid!r} (line {n}): {duration:.1f} s")
            continue
        out_rows.append({**row, "audio": f"wavs/{rid}.wav", "duration": round(duration, 3),
                         "sample_rate": SAMPLE_RATE})
    atomic_write_text(index_path, json.dumps(index, sort_keys=True) + "\n")
    if changed:
        log.warning("synth_manifest: %d WAVs spoke another text under the same id and were synthesised again "
                    "(e.g. %s)", len(changed), ", ".join(changed[:3]))
    log.info("synth_manifest: %d WAVs synthesised, %d reused, in %s", made, reused, wav_dir)
    return out_rows, too_long


def _existing_frames(wav: Path) -> int | None:
    """Frames of a WAV to reuse, or None when it is absent or not 16 kHz mono (then redo it)."""
    import soundfile as sf

    if not wav.exists():
        return None
    try:
        info = sf.info(str(wav))
    except RuntimeError:
        log.warning("unreadable %s: synthesising it again", wav)
        return None
    return info.frames if info.samplerate == SAMPLE_RATE and info.channels == 1 else None


def ensure_audio(examples: list, audio_dir: str | os.PathLike | None, config: SynthConfig = SynthConfig(),
                 drop_too_long: bool = False) -> tuple[list, int]:
    """Give every example an audio file, speaking the missing ones into ``audio_dir`` (resumable).

    Used wherever examples may arrive as text only (training and importance items, benchmarks
    without recordings, the pipeline's data stage), so synthesis and its folder layout
    (``audio_dir/source.jsonl``, ``wavs/``, ``manifest.jsonl``) live in one place.

    Args:
        examples: :class:`~omnishift.data.manifest.Example` rows; returned unchanged if all have audio.
        audio_dir: folder for the synthesized speech (reused on later calls).
        config: one eSpeak voice (:class:`SynthConfig`) or a :class:`~omnishift.data.voices.SpeakerMix`.
        drop_too_long: drop prompts that speak longer than Whisper's 30 s window (and count them)
            instead of refusing to synthesize them.

    Returns:
        ``(examples with audio, number dropped as too long)``.

    Raises:
        ValueError: examples without audio and no ``audio_dir`` to speak them into.
    """
    from omnishift.data.manifest import read_manifest, write_manifest

    missing = [e for e in examples if not e.audio]
    if not missing:
        return examples, 0
    if not audio_dir:
        raise ValueError(f"{len(missing)} of {len(examples)} examples have no audio (e.g. {missing[0].id!r}): give an "
                         "audio folder (--audio-dir / data.audio_dir) to synthesize it with eSpeak NG")
    # only the rows without audio are spoken: rows with recordings keep them
    src = write_manifest(Path(audio_dir) / "source.jsonl", missing)
    spoken = {e.id: e for e in read_manifest(synth_manifest(src, audio_dir, config,
                                                            max_seconds=None if drop_too_long else MAX_SECONDS))}
    too_long = {i for i, e in spoken.items() if drop_too_long and (e.duration or 0) > MAX_SECONDS}
    out = [e if e.audio else spoken[e.id] for e in examples if e.audio or e.id not in too_long]
    log.info("audio: %d examples keep their recordings, %d synthesized into %s, %d dropped as too long",
             len(examples) - len(missing), len(missing) - len(too_long), audio_dir, len(too_long))
    return out, len(too_long)
