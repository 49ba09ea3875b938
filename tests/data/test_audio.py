"""Audio loading: resampling, down-mixing, and each bad-audio case with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from omnishift.data.audio import AudioError, audio_duration, load_audio, wav_bytes


def _sine(sr, seconds, freq=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_stereo_44k_becomes_mono_16k_with_same_pitch(tmp_path):
    sf.write(tmp_path / "a.wav", _sine(44100, 1.5, channels=2), 44100)
    audio = load_audio(tmp_path / "a.wav", item="a")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 24000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 2
    assert audio_duration(tmp_path / "a.wav") == pytest.approx(1.5)


def test_sources_bytes_and_dicts(tmp_path):
    raw = wav_bytes(_sine(16000, 0.5))
    assert len(load_audio(raw)) == 8000
    assert len(load_audio({"bytes": raw, "path": "x.wav"})) == 8000
    assert len(load_audio({"array": _sine(8000, 0.5), "sampling_rate": 8000})) == 8000
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio({"array": [0.1, 0.2]}, item="q1")


@pytest.mark.parametrize("case,match", [
    ("missing", "not found"), ("corrupt", "cannot decode.*re-encode"), ("empty", "empty"),
    ("long", "31.0 s.*trim or split"), ("nan", "NaN"),
])
def test_bad_audio_names_item_and_fix(tmp_path, case, match):
    p = tmp_path / f"{case}.wav"
    if case == "corrupt":
        p.write_bytes(b"RIFF\x00\x00garbage" * 10)
    elif case == "empty":
        sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    elif case == "long":
        sf.write(p, np.zeros(31 * 16000, dtype=np.float32), 16000)
    elif case == "nan":
        sf.write(p, np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=match) as e:
        load_audio(p, item=f"id_{case}")
    assert f"id_{case}" in str(e.value)


def test_a_truncated_wav_is_refused_not_read_half_length(tmp_path):
    import soundfile as sf

    x = (0.5 * np.sin(np.arange(32000) / 5)).astype(np.float32)
    sf.write(tmp_path / "full.wav", x, 16000, subtype="PCM_16")
    raw = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    assert len(load_audio(tmp_path / "full.wav", item="ok")) == 32000
    with pytest.raises(AudioError, match=r"item 'q7'.*truncated.*64000 bytes.*only 3\d{4} are there"):
        load_audio(tmp_path / "cut.wav", item="q7")
    with pytest.raises(AudioError, match="truncated"):
        load_audio(raw[: len(raw) // 2], item="q7")  # the same bytes in memory


def test_anti_phase_stereo_is_refused_but_real_stereo_is_mixed(tmp_path):
    import soundfile as sf

    x = (0.5 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    sf.write(tmp_path / "anti.wav", np.stack([x, -x], 1), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="cancel when mixed"):
        load_audio(tmp_path / "anti.wav", item="a")
    sf.write(tmp_path / "stereo.wav", np.stack([x, 0.5 * x], 1), 16000, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(tmp_path / "stereo.wav"), 0.75 * x, atol=1e-4)
    silent = np.zeros((16000, 2), np.float32)
    sf.write(tmp_path / "silent.wav", silent, 16000, subtype="PCM_16")
    assert not load_audio(tmp_path / "silent.wav").any()  # digital silence is allowed
