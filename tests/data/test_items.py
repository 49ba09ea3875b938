"""build_items: rows without a response are counted and named, never dropped silently."""

from __future__ import annotations

import json
import logging

import pytest

from omnishift.data.items import build_items


def _manifest(tmp_path, rows):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def test_rows_without_response_are_counted_and_named(tmp_path, caplog):
    spec = _manifest(tmp_path, [{"id": "a", "text": "What is two plus two?", "response": "Four."},
                                {"id": "b", "text": "No answer here"}, {"id": "c", "text": "Nor here", "response": ""},
                                {"id": "d", "text": "Blank", "response": " \n\t "}])
    with caplog.at_level(logging.WARNING):
        items, info = build_items(spec, "text")
    assert [it["response"] for it in items] == ["Four."]
    assert info["skipped"] == 3 and info["skipped_no_response"] == 3 and info["items"] == 1  # whitespace is no answer
    assert "3 of 4 examples have no response" in caplog.text and "b, c, d" in caplog.text


def test_a_source_without_any_response_is_refused(tmp_path):
    spec = _manifest(tmp_path, [{"id": "b", "text": "No answer here"}])
    with pytest.raises(ValueError, match="none of its 1 examples has a response"):
        build_items(spec, "text")


def test_training_items_are_spoken_by_the_configured_speaker_mix(tmp_path):
    from omnishift.train.config import config_from_dict
    from omnishift.train.trainer import build_items as training_items

    spec = _manifest(tmp_path, [{"id": "a", "text": "What is two plus two?", "response": "Four."},
                                {"id": "b", "text": "Name a red fruit.", "response": "An apple."}])
    cfg = config_from_dict({"data": {"source": spec, "audio_dir": str(tmp_path / "audio"), "engines": "espeak=1",
                                     "speaker_seed": 2}}, "test")
    items = training_items(cfg)
    assert len(items) == 2 and all(it["audio"].ndim == 1 and len(it["audio"]) > 8000 for it in items)
    recorded = json.loads((tmp_path / "audio" / "synth_config.json").read_text())
    assert recorded["speakers"] == {"engines": "espeak=1", "seed": 2, "effects": True}
