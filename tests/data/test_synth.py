"""eSpeak NG synthesis: deterministic 16 kHz float audio, 16-bit WAVs, resumable manifests."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from omnishift.data import synth
from omnishift.data.synth import SynthConfig, list_voices, synth_manifest, synthesize, write_wav

SENTENCE = "Please tell me a short story today."  # 6 words
WHISPER = SynthConfig(voice="en-us+whisper")  # a breathy variant: uses eSpeak's noise generator


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


ROWS = [
    {"id": "q1", "text": "What is the capital of France?", "answers": ["Paris"]},
    {"id": "q2", "text": "How many legs does a spider have?", "answers": ["eight"]},
    {"id": "q3", "text": "Name a primary colour.", "answers": ["red"]},
]


@pytest.fixture()
def manifest(tmp_path):
    return _write_jsonl(tmp_path / "in.jsonl", ROWS)


# ---------------------------------------------------------------------------- synthesize


def test_synthesize_float32_mono_in_range():
    x = synthesize(SENTENCE)
    assert x.dtype == np.float32 and x.ndim == 1
    assert np.abs(x).max() <= 1.0 and np.abs(x).max() > 0.1


def test_synthesize_is_deterministic_whatever_came_before():
    a = synthesize(SENTENCE)
    synthesize("Something else entirely, with numbers like 1234 in it!")  # would shift eSpeak's state
    b = synthesize(SENTENCE)
    assert np.array_equal(a, b)
    w1 = synthesize(SENTENCE, WHISPER)
    synthesize("More text in between.", WHISPER)
    time.sleep(1.02 - time.time() % 1)  # eSpeak seeds its noise from the clock's second
    assert np.array_equal(w1, synthesize(SENTENCE, WHISPER))


def test_synthesize_is_deterministic_across_processes():
    """What a resumed run relies on: a fresh process (other clock second) gives the same samples."""
    code = ("import hashlib; from omnishift.data.synth import synthesize, SynthConfig as C; "
            f"print(*(hashlib.sha256(synthesize({SENTENCE!r}, C(voice=v)).tobytes()).hexdigest() "
            "for v in ('en-us', 'en-us+whisper')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    here = [hashlib.sha256(synthesize(SENTENCE, c).tobytes()).hexdigest() for c in (SynthConfig(), WHISPER)]
    assert out == here


def test_duration_plausible_for_six_words():
    assert 1.0 <= len(synthesize(SENTENCE)) / synth.SAMPLE_RATE <= 4.0


def test_faster_rate_is_shorter_and_pitch_changes_audio():
    slow, default, fast = (synthesize(SENTENCE, SynthConfig(rate=r)) for r in (120, 175, 300))
    assert len(fast) < len(default) < len(slow)
    assert len(fast) < 0.75 * len(slow)
    assert not np.array_equal(default, synthesize(SENTENCE, SynthConfig(pitch=80)))


@pytest.mark.parametrize("text", ["", "   \n ", "\x01\x02"])
def test_empty_text_raises(text):
    with pytest.raises(ValueError, match="empty"):
        synthesize(text)


def test_unpronounceable_text_raises():
    with pytest.raises(ValueError, match="silence"):
        synthesize("...")


@pytest.mark.parametrize("voice", ["no-such-voice", "en-us+no-such-variant"])
def test_unknown_voice_raises_and_says_how_to_list(voice):
    with pytest.raises(ValueError, match="list_voices"):
        synthesize("hello", SynthConfig(voice=voice))


@pytest.mark.parametrize("kwargs", [{"rate": 79}, {"rate": 451}, {"rate": 175.0}, {"rate": True},
                                    {"pitch": -1}, {"pitch": 101}, {"voice": ""}, {"voice": 3}])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError, match="SynthConfig"):
        SynthConfig(**kwargs)


def test_list_voices_names_are_usable():
    voices = list_voices()
    assert voices == sorted(voices) and {"en-us", "en", "de", "fr"} <= set(voices)
    assert len(synthesize("bonjour", SynthConfig(voice="fr"))) > 0


# ------------------------------------------------------------------------------ write_wav


def test_write_wav_is_16k_mono_pcm16(tmp_path):
    x = synthesize(SENTENCE)
    path = write_wav(tmp_path / "sub" / "a.wav", x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    assert info.frames == len(x)
    y, _ = sf.read(str(path), dtype="float32")
    assert np.abs(y - x).max() < 2e-4
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]  # no temp file left behind


def test_write_wav_rejects_stereo(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        write_wav(tmp_path / "a.wav", np.zeros((10, 2)))


# ------------------------------------------------------------------------- synth_manifest


def test_synth_manifest_writes_wavs_and_manifest(manifest, tmp_path):
    out = synth_manifest(manifest, tmp_path / "out", progress=False)
    assert out == tmp_path / "out" / "manifest.jsonl"
    rows = _read_jsonl(out)
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    for src, row in zip(ROWS, rows):
        assert {k: row[k] for k in src} == src  # input fields kept
        assert row["audio"] == f"wavs/{row['id']}.wav" and row["sample_rate"] == 16000
        info = sf.info(str(out.parent / row["audio"]))  # relative to the manifest's folder
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row["duration"] == round(info.frames / 16000, 3) and 0.5 < row["duration"] < 5


def test_synth_manifest_is_deterministic(manifest, tmp_path):
    a = synth_manifest(manifest, tmp_path / "a", progress=False).parent
    b = synth_manifest(manifest, tmp_path / "b", progress=False).parent
    for r in ROWS:
        assert (a / "wavs" / f"{r['id']}.wav").read_bytes() == (b / "wavs" / f"{r['id']}.wav").read_bytes()
    assert (a / "manifest.jsonl").read_bytes() == (b / "manifest.jsonl").read_bytes()


def test_synth_manifest_resumes_reusing_existing_wavs(manifest, tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    synth_manifest(manifest, out_dir, progress=False)
    first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out_dir / "wavs").iterdir()}
    (out_dir / "wavs" / "q2.wav").unlink()  # as if interrupted before q2
    (out_dir / "manifest.jsonl").unlink()
    spoken = []
    real = synth.synthesize
    monkeypatch.setattr(synth, "synthesize", lambda text, config: spoken.append(text) or real(text, config))
    synth_manifest(manifest, out_dir, progress=False)
    assert spoken == [ROWS[1]["text"]]
    now = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out_dir / "wavs").iterdir()}
    assert now["q1.wav"] == first["q1.wav"] and now["q3.wav"] == first["q3.wav"]  # untouched
    assert now["q2.wav"][1] == first["q2.wav"][1]  # redone to the same bytes
    assert len(_read_jsonl(out_dir / "manifest.jsonl")) == 3
    spoken.clear()
    synth_manifest(manifest, out_dir, overwrite=True, progress=False)
    assert len(spoken) == 3


def test_resume_with_another_config_is_refused(manifest, tmp_path):
    synth_manifest(manifest, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="overwrite=True"):
        synth_manifest(manifest, tmp_path / "out", SynthConfig(rate=250), progress=False)


def test_instruction_rows(tmp_path):
    rows = [{"id": "dolly_00001", "instruction": "Which is a species of fish? Tope or Rope", "input": "",
             "output": "Tope", "self_contained": True}]
    out = synth_manifest(_write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out",
                         text_field="instruction", progress=False)
    (row,) = _read_jsonl(out)
    assert row["output"] == "Tope" and row["self_contained"] is True and row["duration"] > 1


@pytest.mark.parametrize("bad, match", [
    ('{"text": "no id"}', "line 2: id None"),
    ('{"id": "../escape", "text": "hi"}', "line 2: id '../escape'"),
    ('{"id": "a b", "text": "hi"}', "line 2: id 'a b'"),
    ('{"id": "q9"}', r"line 2 \(id 'q9'\): field 'text' is missing"),
    ('{"id": "q9", "text": "  "}', r"line 2 \(id 'q9'\): field 'text' is missing or empty"),
    ('{"id": "q1", "text": "again"}', "line 2: id 'q1' repeats line 1"),
    ('{"id": "q9", "text": ', "line 2: not valid JSON"),
    ('["q9", "hi"]', "line 2: a JSON list"),
])
def test_bad_rows_name_the_line(tmp_path, bad, match):
    path = _write_jsonl(tmp_path / "in.jsonl", [ROWS[0], bad, ROWS[2]])
    with pytest.raises(ValueError, match=match):
        synth_manifest(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing synthesised before the rows are checked


def test_too_long_audio_names_the_id(tmp_path):
    long_text = " ".join(["tomorrow"] * 100) + "."  # about 39 s at 175 words per minute
    path = _write_jsonl(tmp_path / "in.jsonl", [ROWS[0], {"id": "long_one", "text": long_text}])
    with pytest.raises(ValueError, match=r"long_one.*line 2.*max_seconds=None"):
        synth_manifest(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "wavs" / "long_one.wav").exists()
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    rows = _read_jsonl(synth_manifest(path, tmp_path / "out", max_seconds=None, progress=False))
    assert rows[1]["duration"] > 30


def test_an_edited_text_is_spoken_again_not_paired_with_the_old_clip(manifest, tmp_path, monkeypatch, caplog):
    """Issue 12.3: WAVs were reused by id alone."""
    out_dir = tmp_path / "out"
    synth_manifest(manifest, out_dir, progress=False)
    rows = _read_jsonl(manifest)
    rows[0]["text"] = "A completely different question about rivers?"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spoken = []
    real = synth.synthesize
    monkeypatch.setattr(synth, "synthesize", lambda text, config: spoken.append(text) or real(text, config))
    synth_manifest(edited, out_dir, progress=False)
    assert spoken == [rows[0]["text"]]  # only the edited row, and it is spoken anew
    wav = out_dir / "wavs" / f"{rows[0]['id']}.wav"
    new = real(rows[0]["text"], SynthConfig())
    np.testing.assert_allclose(sf.read(wav, dtype="float32")[0], new, atol=3 / 32767)  # the new text's clip
    assert "spoke another text under the same id" in caplog.text


def test_rows_with_recordings_keep_them_when_others_are_synthesized(tmp_path):
    """Issue 12.2: one row without audio made every row re-synthesized, replacing real recordings."""
    from omnishift.data.manifest import Example
    from omnishift.data.synth import ensure_audio

    real = tmp_path / "real.wav"
    sf.write(real, np.zeros(8000, np.int16), 16000, subtype="PCM_16")
    exs = [Example(id="r1", text="Recorded question?", audio=str(real)), Example(id="s1", text="What is red?")]
    out, dropped = ensure_audio(exs, tmp_path / "audio")
    assert dropped == 0 and [e.id for e in out] == ["r1", "s1"]
    assert out[0].audio == str(real)  # the recording is kept
    assert out[1].audio and "audio" in str(out[1].audio) and sf.info(out[1].audio).frames > 8000
    assert [r["id"] for r in _read_jsonl(tmp_path / "audio" / "manifest.jsonl")] == ["s1"]  # only s1 spoken


# ---------------------------------------------------------------------------- many speakers


def test_a_speaker_mix_draws_each_voice_from_the_id_so_order_and_resumes_do_not_change_a_clip(manifest, tmp_path):
    from omnishift.data.voices import SpeakerMix

    mix = SpeakerMix("espeak=1", seed=3)
    a = synth_manifest(manifest, tmp_path / "a", mix, progress=False).parent
    reverse = _write_jsonl(tmp_path / "rev.jsonl", ROWS[::-1][:2])  # another order, one row fewer
    b = synth_manifest(reverse, tmp_path / "b", mix, progress=False).parent
    for r in ROWS[1:]:
        assert (a / "wavs" / f"{r['id']}.wav").read_bytes() == (b / "wavs" / f"{r['id']}.wav").read_bytes()
    one = synth_manifest(manifest, tmp_path / "one", progress=False).parent  # the single eSpeak voice
    assert (a / "wavs" / "q1.wav").read_bytes() != (one / "wavs" / "q1.wav").read_bytes()
    other = synth_manifest(manifest, tmp_path / "c", SpeakerMix("espeak=1", seed=4), progress=False).parent
    assert (a / "wavs" / "q1.wav").read_bytes() != (other / "wavs" / "q1.wav").read_bytes()
    assert json.loads((a / "synth_config.json").read_text())["speakers"] == {"engines": "espeak=1", "seed": 3,
                                                                             "effects": True}
    with pytest.raises(ValueError, match="overwrite=True"):  # one voice and a mix never share a folder
        synth_manifest(manifest, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="overwrite=True"):
        synth_manifest(manifest, tmp_path / "a", SpeakerMix("espeak=1", seed=4), progress=False)
    with pytest.raises(ValueError, match="unknown synthesizer"):
        synth_manifest(manifest, tmp_path / "d", SpeakerMix("festival=1"), progress=False)
