"""Offline text-to-speech with eSpeak NG, called through ``ctypes``: spoken prompts at 16 kHz.

Why eSpeak NG: the ``espeakng-loader`` wheel ships ``libespeak-ng.so`` together with its
``espeak-ng-data/``, so synthesis needs no system package, no network and no GPU, and takes
milliseconds per sentence on a CPU. The voice is robotic, which is fine for probing whether a
speech LLM follows spoken instructions; it is not meant to sound natural.

Why ``ctypes`` and not the ``espeak-ng`` binary: there is no binary to rely on (no apt), and the
C API hands us the int16 samples directly through a callback, without temporary files.

Determinism. The same text, voice, rate and pitch must give identical samples in any process and
after any earlier call, so that an interrupted :func:`synth_manifest` resumes to the same bytes as
an uninterrupted run. eSpeak NG 1.52 breaks this in two ways, both measured here:

* state carries from one utterance to the next in static variables (the pitch-flutter phase,
  the automatic gain control, the roughness cycle counter, ...), and ``espeak_Terminate`` +
  ``espeak_Initialize`` does not reset them: the same sentence came out 64131, 64140, 64139
  samples long depending on what was spoken before;
* ``espeak_Initialize`` seeds eSpeak's noise generator with ``time(NULL)``; voices with a
  ``breath`` setting (``+f2``, ``+f3``, ``+whisper``, ... 9 of the 104 variants) then differ
  from one second to the next.

So every utterance runs in a freshly loaded copy of the library (``dlopen``, initialise, fixed
seed, synthesise, terminate, ``dlclose``: about 5 ms a call, mostly reloading the voice), and the
copy is private (a file in a temp folder), so that no other user of eSpeak in the process shares
or disturbs its state. The library is process-global C code, so one lock serialises all calls.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import logging
import math
import numbers
import os
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from omnishift.models.encoder import SAMPLE_RATE  # re-exported: Whisper's input rate
from omnishift.paths import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

MAX_SECONDS = 30.0  # Whisper's input window: longer prompts would be cut
RATE_RANGE = (80, 450)  # espeakRATE_MINIMUM .. espeakRATE_MAXIMUM, words per minute
PITCH_RANGE = (0, 100)

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth blocks and feeds the callback
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # end with a sentence pause, as the espeak-ng command line does
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_RAND_SEED = 1  # fixed seed for eSpeak's noise generator (breathy voices)

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# C0 controls other than newline: eSpeak reads \x01 as the start of an embedded command.
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class SynthConfig:
    """How to speak: an eSpeak NG voice, a speaking rate and a pitch.

    Frozen so that it is hashable and safe as a default argument.

    Args:
        voice: eSpeak NG voice, e.g. ``"en-us"``, ``"en"`` (British) or ``"en-us+f3"`` (with a
            variant from ``espeak-ng-data/voices/!v``). :func:`list_voices` lists the voices.
        rate: words per minute, 80-450 (eSpeak's own limits).
        pitch: base pitch, 0-100 (50 is the voice's default).

    Raises:
        ValueError: a value of the wrong type or out of range.
    """

    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.voice, str) or not self.voice.strip() or not self.voice.isascii():
            raise ValueError(f"SynthConfig.voice must be a non-empty ASCII voice name like 'en-us', got {self.voice!r}")
        for name, (lo, hi) in (("rate", RATE_RANGE), ("pitch", PITCH_RANGE)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= v <= hi:
                unit = " (words per minute)" if name == "rate" else ""
                raise ValueError(f"SynthConfig.{name} must be an integer in {lo}..{hi}{unit}, got {v!r}")
            object.__setattr__(self, name, int(v))  # a plain int, also for numpy integers (JSON-safe)


class _VOICE(ctypes.Structure):
    """``espeak_VOICE`` from speak_lib.h (only read, never allocated by us)."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _ESpeak:
    """The eSpeak NG library: one per process, used under :attr:`lock`.

    Holds the path of a private copy of ``libespeak-ng.so``; each :meth:`_session` loads that copy
    afresh and unloads it at the end (see the module docstring for why).
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise RuntimeError("eSpeak NG is missing: pip install espeakng-loader") from e
        self.lock = threading.Lock()
        self.data_path = Path(espeakng_loader.get_data_path())
        src = Path(espeakng_loader.get_library_path())
        tmp = Path(tempfile.mkdtemp(prefix="omnishift-espeak-"))
        atexit.register(shutil.rmtree, tmp, True)
        self.lib_path = tmp / src.name
        shutil.copyfile(src, self.lib_path)
        try:  # a temp folder mounted noexec cannot hold libraries: then share the wheel's copy
            _dlclose(ctypes.CDLL(str(self.lib_path))._handle)
        except OSError as e:
            log.warning("cannot load a private copy of eSpeak NG (%s); using %s", e, src)
            self.lib_path = src
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # kept alive as long as the engine
        self._voices: list[str] | None = None
        self._checked_unload = False
        self.version = ""

    def _on_samples(self, wav, n: int, _events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0  # 0 = continue

    @contextmanager
    def _session(self) -> Iterator[ctypes.CDLL]:
        """A freshly loaded, initialised library; terminated and unloaded on exit. Call under lock."""
        lib = ctypes.CDLL(str(self.lib_path))
        handle = lib._handle
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
            lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VOICE))
            lib.espeak_Info.argtypes = [ctypes.c_void_p]
            lib.espeak_Info.restype = ctypes.c_char_p
            data = str(self.data_path).encode()
            sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
            if sr <= 0:
                raise RuntimeError(f"espeak_Initialize failed ({sr}) with data at {self.data_path}; "
                                   "reinstall espeakng-loader")
            self.version = lib.espeak_Info(None).decode()
            lib.espeak_ng_SetRandSeed(_RAND_SEED)
            lib.espeak_SetSynthCallback(self._callback)
            yield lib
        finally:
            lib.espeak_Terminate()
            del lib
            _dlclose(handle)
            if not self._checked_unload:
                self._checked_unload = True
                if _still_mapped(self.lib_path):
                    log.warning("eSpeak NG was not unloaded after use: synthesis may depend on earlier calls")

    def _set_voice(self, lib: ctypes.CDLL, voice: str) -> None:
        variant = voice.partition("+")[2]
        if (lib.espeak_SetVoiceByName(voice.encode()) != 0
                or (variant and not (self.data_path / "voices" / "!v" / variant).is_file())):
            raise ValueError(f"unknown eSpeak NG voice {voice!r}: see omnishift.data.synth.list_voices() "
                             f"(e.g. 'en-us', 'en'); variants are the file names in "
                             f"{self.data_path / 'voices' / '!v'} (e.g. 'en-us+f3')")

    def check_voice(self, voice: str) -> None:
        """Raise ValueError for a voice eSpeak does not know (loads the voice, speaks nothing)."""
        with self.lock, self._session() as lib:
            self._set_voice(lib, voice)

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
        """int16 samples at eSpeak's native rate, and that rate."""
        data = text.encode("utf-8") + b"\0"
        with self.lock, self._session() as lib:
            self._set_voice(lib, voice)
            lib.espeak_SetParameter(_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            sr = lib.espeak_ng_GetSampleRate()  # a voice may change it; 22050 for all voices here
            self._chunks = []
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            err = err or lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err}")
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), sr

    def voices(self) -> list[str]:
        """Voice names that ``espeak_SetVoiceByName`` accepts, sorted (cached)."""
        if self._voices is None:
            with self.lock, self._session() as lib:
                array = lib.espeak_ListVoices(None)
                names = set()
                i = 0
                while array[i]:
                    # the identifier is "<family>/<file>", e.g. "gmw/en-US"; the file name, in any
                    # case, is what SetVoiceByName matches. (The language code is not: "en-gb" fails.)
                    names.add(array[i].contents.identifier.decode().rsplit("/", 1)[-1].lower())
                    i += 1
            self._voices = sorted(names)
        return list(self._voices)


def _dlclose(handle: int) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(handle)


def _still_mapped(path: Path) -> bool:
    try:
        return str(path) in Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: cannot tell
        return False


_ENGINE: _ESpeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _ESpeak:
    """The process-wide :class:`_ESpeak`, created on first use (copies the library once)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _ESpeak()
        return _ENGINE


def list_voices() -> list[str]:
    """The eSpeak NG voices available offline, as names for :attr:`SynthConfig.voice`.

    Returns:
        Sorted voice names such as ``"en"`` (British English), ``"en-us"``, ``"de"``, ``"fr"``.
        Any of them takes a ``+variant`` suffix naming a file in ``espeak-ng-data/voices/!v``
        (``"en-us+f3"``, ``"en-us+m3"``, ``"en-us+whisper"``) for another speaker.
    """
    return _engine().voices()


def synthesize(text: str, config: SynthConfig = SynthConfig()) -> np.ndarray:
    """Speak ``text`` with eSpeak NG.

    Deterministic: the same text and config give identical samples in any process, whatever was
    synthesised before (see the module docstring).

    Args:
        text: what to say (UTF-8; control characters other than newlines are read as spaces).
        config: voice, rate and pitch.

    Returns:
        float32 mono samples in [-1, 1] at 16 kHz.

    Raises:
        ValueError: empty text, text with nothing to pronounce, or an unknown voice.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    text = _CONTROL_RE.sub(" ", text).strip()
    if not text:
        raise ValueError("text is empty: nothing to synthesize")
    pcm, sr = _engine().synthesize(text, config.voice, config.rate, config.pitch)
    if not pcm.any():  # e.g. "..." or "?!": eSpeak says nothing, only a pause
        raise ValueError(f"eSpeak NG produced only silence for {text[:60]!r}: give text with words in it")
    from scipy.signal import resample_poly

    g = math.gcd(SAMPLE_RATE, sr)  # 22050 -> 16000 is up 320, down 441
    x = resample_poly(pcm.astype(np.float64) / 32768.0, SAMPLE_RATE // g, sr // g)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


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
        config: voice, rate and pitch.
        text_field: the field to speak.
        overwrite: re-synthesise WAVs that already exist.
        progress: show a tqdm progress bar.
        max_seconds: longest audio allowed (Whisper sees 30 s); None for no limit.

    Returns:
        ``out_dir/manifest.jsonl``: the input rows, in order, each with ``audio`` (the WAV's path
        relative to the manifest's folder, ``wavs/<id>.wav``, so the folder can be moved),
        ``duration`` (seconds, 3 decimals) and ``sample_rate`` (16000) set.

    Raises:
        ValueError: bad rows (every one named by line number, with the fix), an unknown voice, a
            resume with another configuration, or audio longer than ``max_seconds`` (ids named;
            those WAVs are not written, the others are, and no manifest is written).
    """
    from tqdm import tqdm

    in_path, out_dir = Path(in_path), Path(out_dir)
    rows = _read_manifest(in_path, text_field)
    _engine().check_voice(config.voice)
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)

    settings = {**asdict(config), "text_field": text_field}
    cfg_path = out_dir / "synth_config.json"
    if cfg_path.exists() and not overwrite:
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        old = {k: old.get(k) for k in settings}
        if old != settings and any((wav_dir / f"{rid}.wav").exists() for _, _, rid, _ in rows):
            raise ValueError(f"{out_dir} holds WAVs made with {old}, not {settings}: pass overwrite=True "
                             "(--overwrite) to redo them, or choose another out_dir")
    atomic_write_text(cfg_path, json.dumps({**settings, "espeak_ng": _engine().version or None,
                                            "sample_rate": SAMPLE_RATE}, indent=2) + "\n")

    # which text each WAV speaks: a WAV is reused only for the same text (issue 12.3: an edited
    # question, or two sources sharing a folder, paired an old clip with a new text by id alone)
    index_path = out_dir / "texts.json"
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
            audio = synthesize(text, config)
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
    if too_long:
        more = f" (and {len(too_long) - 10} more)" if len(too_long) > 10 else ""
        raise ValueError(f"{len(too_long)} prompt(s) longer than {max_seconds:g} s, Whisper's window{more}: "
                         + "; ".join(too_long[:10])
                         + ". Shorten or drop those rows, raise SynthConfig.rate, or pass max_seconds=None")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows)
    return atomic_write_text(out_dir / "manifest.jsonl", lines)


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
        config: voice, rate and pitch.
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
    # only the rows without audio are spoken: rows with recordings keep them (issue 12.2)
    src = write_manifest(Path(audio_dir) / "source.jsonl", missing)
    spoken = {e.id: e for e in read_manifest(synth_manifest(src, audio_dir, config,
                                                            max_seconds=None if drop_too_long else MAX_SECONDS))}
    too_long = {i for i, e in spoken.items() if drop_too_long and (e.duration or 0) > MAX_SECONDS}
    out = [e if e.audio else spoken[e.id] for e in examples if e.audio or e.id not in too_long]
    log.info("audio: %d examples keep their recordings, %d synthesized into %s, %d dropped as too long",
             len(examples) - len(missing), len(missing) - len(too_long), audio_dir, len(too_long))
    return out, len(too_long)
