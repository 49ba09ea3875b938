"""Manifest round trip, relative audio paths, clear errors, and counted skips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from omnishift.data.manifest import Example, SkipReport, load_examples_audio, read_manifest, write_manifest


def test_round_trip_with_relative_audio(tmp_path):
    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    ex = [Example("a", "Hello?", audio=str(tmp_path / "wavs" / "a.wav"), answers=["hi"], meta={"lang": "en"}),
          Example("b", "Text only", response="ok")]
    write_manifest(tmp_path / "m.jsonl", ex)
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows[0]["audio"] == "wavs/a.wav" and rows[0]["lang"] == "en"
    back = read_manifest(tmp_path / "m.jsonl")
    assert back[0].audio == str(tmp_path / "wavs" / "a.wav") and back[0].meta == {"lang": "en"}
    assert back[1].response == "ok" and back[1].audio is None


@pytest.mark.parametrize("content,match", [
    ('{"id": "a"}\n', "m.jsonl:1: missing required field 'text'"),
    ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "m.jsonl:2: duplicate id 'a'"),
    ('{"id": "a", "text": "x"}\nnot json\n', "m.jsonl:2: not valid JSON"),
])
def test_bad_manifests_fail_clearly(tmp_path, content, match):
    (tmp_path / "m.jsonl").write_text(content)
    with pytest.raises(ValueError, match=match):
        read_manifest(tmp_path / "m.jsonl")


def test_skip_is_counted_never_silent(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"nope")
    ex = [Example("ok", "q", audio=str(tmp_path / "ok.wav")), Example("bad", "q", audio=str(tmp_path / "bad.wav")),
          Example("none", "q")]
    with pytest.raises(ValueError, match="item 'bad'"):
        list(load_examples_audio(ex))
    report = SkipReport()
    got = list(load_examples_audio(ex, on_error="skip", report=report))
    assert [e.id for e, _ in got] == ["ok"] and report.count == 2
    assert "skipped 2 items" in report.summary()
