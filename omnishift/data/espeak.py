"""eSpeak NG through ``ctypes``: deterministic offline text-to-speech at 16 kHz.

Why eSpeak NG: the ``espeakng-loader`` wheel ships ``libespeak-ng.so`` together with its
``espeak-ng-data/``, so synthesis needs no system package, no network and no GPU, and takes
milliseconds per sentence on a CPU. The voice is robotic, which is fine for probing whether a
speech LLM follows spoken instructions; it is not meant to sound natural.

Why ``ctypes`` and not the ``espeak-ng`` binary: there is no binary to rely on (no apt), and the
C API hands us the int16 samples directly through a callback, without temporary files.

Determinism. The same text, voice, rate and pitch must give identical samples in any process and
after any earlier call, so that an interrupted :func:`omnishift.data.synth.synth_manifest` resumes to the same bytes as
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
import logging
import math
import numbers
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from omnishift.models.encoder import SAMPLE_RATE

log = logging.getLogger(__name__)

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
