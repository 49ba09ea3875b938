"""The alignment set: deterministic clips, resumable shards, refusal of a set made from other inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import make_tiny_encoder

from omnishift.data.augment import AugmentConfig, augment
from omnishift.align.dataset import alignment_texts, build_alignment_set, load_alignment_set

TEXTS = [("t1", "What is the capital of France?"), ("t2", "How many legs does a spider have?"),
         ("t3", "Name three primary colors."), ("t4", "Who wrote Hamlet?")]


@pytest.fixture()
def encoder_dir(tmp_path):
    enc, fe = make_tiny_encoder()
    enc.save_pretrained(tmp_path / "enc")
    fe.save_pretrained(tmp_path / "enc")
    return str(tmp_path / "enc")


def _build(out, encoder_dir, seed=0, n=6):
    return build_alignment_set(out, n, encoder=encoder_dir, seed=seed, workers=1, shard_size=3, texts=TEXTS,
                               progress=False)


def test_build_resume_is_byte_identical_and_other_inputs_are_refused(tmp_path, encoder_dir):
    out = tmp_path / "set"
    summary = _build(out, encoder_dir)
    assert summary["clips"] + summary["skipped"] == 6 and summary["clips"] >= 5
    shard1 = (out / "shards" / "00001.safetensors").read_bytes()
    meta, items = load_alignment_set(out)
    assert {it["text"] for it in items} <= {t for _, t in TEXTS}
    assert all(it["encoder_states"].shape == (it["frames"], 16) for it in items)
    assert len({it["voice"] for it in items}) > 1  # voices vary per clip
    (out / "shards" / "00001.safetensors").unlink()  # an interrupted build: the second shard is missing
    _build(out, encoder_dir)
    assert (out / "shards" / "00001.safetensors").read_bytes() == shard1
    with pytest.raises(FileExistsError, match="fingerprint"):
        _build(out, encoder_dir, seed=1)
    assert json.loads((out / "meta.json").read_text())["seed"] == 0  # the refused call changed nothing


def test_augment_is_seeded_and_keeps_the_clip_in_range():
    audio = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    a, what_a = augment(audio, AugmentConfig(), np.random.default_rng([0, 7]))
    b, what_b = augment(audio, AugmentConfig(), np.random.default_rng([0, 7]))
    assert what_a == what_b and np.array_equal(a, b)
    assert np.abs(a).max() <= 1.0 and "speed" in what_a
    c, _ = augment(audio, AugmentConfig(), np.random.default_rng([0, 8]))
    assert not (len(c) == len(a) and np.array_equal(a, c))


@pytest.mark.integration
def test_alignment_texts_never_hold_a_benchmark_question(shared_data):
    from omnishift.align.dataset import _norm
    from omnishift.data.sources import load_llama_questions, load_web_questions

    questions = alignment_texts(shared_data)
    texts = alignment_texts(shared_data, responses=True)
    assert texts[: len(questions)] == questions  # responses only add: question-only sets keep their texts
    assert len(texts) > 3 * len(questions) and all("/r" in i for i, _ in texts[len(questions):])
    for t in (questions, texts):
        keys = {_norm(x) for _, x in t}
        assert len(questions) > 15000 and len(keys) == len(t)
        assert not keys & {_norm(e.text) for e in load_llama_questions(shared_data)}
        assert not keys & {_norm(e.text) for e in load_web_questions("test", shared_data)}
        assert all(3 <= len(x.split()) <= 30 and x.isascii() for _, x in t)


def test_parse_text_parts():
    from omnishift.align.dataset import parse_text_parts

    assert parse_text_parts("questions+responses") == ("questions", "responses")
    with pytest.raises(ValueError, match="unknown part"):
        parse_text_parts("questions+poems")


def test_leading_and_trailing_silence_is_seeded_and_optional():
    audio = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    plain = AugmentConfig(speed=(1.0, 1.0), reverb_p=0, filter_p=0, noise_p=0, gain_db=(0.0, 0.0))
    a, what = augment(audio, plain, np.random.default_rng(1))
    assert len(a) == 16000 and "lead_s" not in what and "lead_silence" not in plain.to_dict()
    padded = AugmentConfig(**{**plain.__dict__, "lead_silence": (0.1, 0.5), "trail_silence": (0.2, 0.2)})
    b, what = augment(audio, padded, np.random.default_rng(1))
    lead = len(b) - 16000 - 3200
    assert 0.1 <= what["lead_s"] <= 0.5 and what["trail_s"] == 0.2 and abs(lead - what["lead_s"] * 16000) <= 8
    assert not b[:lead].any() and b[lead:lead + 16000].any() and not b[lead + 16000:].any()
    assert padded.to_dict()["lead_silence"] == (0.1, 0.5)


def test_an_espeak_only_plan_draws_as_before_engines_existed():
    """Sets built before engines could be mixed must resume to the same clips: same draws, same
    fingerprint fields."""
    from omnishift.data.voices import clip_plan

    voices = {"espeak": ["en", "en-us", "+f1", "+m3"]}
    aug = AugmentConfig()
    for index in range(20):
        plan, _ = clip_plan(index, 5, voices, aug)
        rng = np.random.default_rng([5, index])  # the pre-registry draw order, written out
        voice = ["en", "en-us"][rng.integers(2)]
        if rng.random() < aug.variant_p:
            voice += ["+f1", "+m3"][rng.integers(2)]
        assert plan == {"voice": voice, "rate": int(rng.integers(aug.rate[0], aug.rate[1] + 1)),
                        "pitch": int(rng.integers(aug.pitch[0], aug.pitch[1] + 1))}
    assert "engines" not in aug.to_dict() and "engines" in AugmentConfig(engines=(("espeak", 1), ("pico", 1))).to_dict()


def test_a_set_mixes_engines_with_their_weights(tmp_path, encoder_dir, monkeypatch):
    from omnishift.data import voices as V

    def fake_speak(text, plan):  # a tone whose pitch says the plan: any engine can be registered
        return (0.3 * np.sin(np.arange(8000 + 40 * len(text)) * plan["pitch"] / 2000)).astype(np.float32)

    fake = V.Engine(lambda: ["fake:a", "fake:b"], lambda rng, vs, aug: {"voice": vs[rng.integers(2)], "rate": 100,
                                                                        "pitch": int(rng.integers(50, 150))}, fake_speak)
    monkeypatch.setitem(V.ENGINES, "fake", fake)
    plans = [V.clip_plan(i, 0, {"espeak": ["en", "+f1"], "fake": ["fake:a", "fake:b"]},
                         AugmentConfig(engines=(("espeak", 1.0), ("fake", 3.0))))[0] for i in range(400)]
    share = np.mean([V.engine_of(p["voice"]) == "fake" for p in plans])
    assert 0.68 < share < 0.82  # weight 3 of 4
    with pytest.raises(ValueError, match="unknown synthesizer"):
        V.engine_voices(AugmentConfig(engines=(("nope", 1.0),)))
    with pytest.raises(ValueError, match="positive sum"):
        AugmentConfig(engines=(("espeak", 0.0),))
    summary = build_alignment_set(tmp_path / "mix", 6, encoder=encoder_dir, workers=0, shard_size=3, texts=TEXTS,
                                  augment_cfg=AugmentConfig(engines=(("fake", 1.0),)), progress=False)
    meta, items = load_alignment_set(tmp_path / "mix")
    assert summary["clips"] == 6 and {it["voice"] for it in items} <= {"fake:a", "fake:b"}
    assert meta["other_voices"] == {"fake": ["fake:a", "fake:b"]} and meta["voices"] == []


def test_parse_engines():
    from omnishift.data.augment import parse_engines

    assert parse_engines("espeak=3, pico") == (("espeak", 3.0), ("pico", 1.0))
    with pytest.raises(ValueError, match="not a number"):
        parse_engines("espeak=x")


def test_pico_is_deterministic_per_call_and_checks_its_inputs():
    pytest.importorskip("ttspico", reason="SVOX Pico is the optional extra omnishift[pico]")
    from omnishift.data.pico import synthesize_pico

    a = synthesize_pico("Hello there, how are you?", "en-US", 100, 100)
    synthesize_pico("Something else first.", "en-GB", 130, 80)
    b = synthesize_pico("Hello there, how are you?", "en-US", 100, 100)
    assert np.array_equal(a, b) and 1.0 < len(a) / 16000 < 4.0 and np.abs(a).max() <= 1.0
    assert len(synthesize_pico("Hello there, how are you?", "en-US", 150, 100)) < len(a)  # faster is shorter
    with pytest.raises(ValueError, match="voice"):
        synthesize_pico("Hi", "de-DE")
    with pytest.raises(ValueError, match="rate"):
        synthesize_pico("Hi", "en-US", rate=900)


def test_piper_is_deterministic_and_checks_its_inputs():
    """Piper's VITS noise is unseeded inside its ONNX graph, so the engine speaks with both noise
    scales at 0: the same text and speed give the same samples, whatever was spoken in between."""
    pytest.importorskip("piper", reason="Piper is the optional extra omnishift[piper]")
    from omnishift.data.voices import ENGINES, clip_plan
    from omnishift.data.piper_tts import synthesize_piper

    a = synthesize_piper("Hello there, how are you?", rate=100)
    synthesize_piper("Something else first.", rate=120)
    b = synthesize_piper("Hello there, how are you?", rate=100)
    assert np.array_equal(a, b) and a.dtype == np.float32 and 0.8 < len(a) / 16000 < 4.0
    assert np.abs(a).max() <= 1.01 and np.abs(a).max() > 0.1
    assert len(synthesize_piper("Hello there, how are you?", rate=125)) < len(a)  # faster is shorter
    with pytest.raises(ValueError, match="voice"):
        synthesize_piper("Hi", "en_GB-nobody")
    with pytest.raises(ValueError, match="rate"):
        synthesize_piper("Hi", rate=400)
    voices = {"piper": ENGINES["piper"].voices()}
    aug = AugmentConfig(engines=(("piper", 1.0),), piper_rate=(90, 110))
    plan, _ = clip_plan(3, 0, voices, aug)
    assert plan["voice"] == "piper:en_US-joe-medium" and 90 <= plan["rate"] <= 110
    assert "piper_rate" in aug.to_dict() and "piper_rate" not in AugmentConfig(engines=(("espeak", 1), ("pico", 1))).to_dict()


def test_piper_missing_says_how_to_install(monkeypatch):
    import sys

    from omnishift.data import piper_tts

    monkeypatch.setattr(piper_tts, "_LOADED", {})
    monkeypatch.setitem(sys.modules, "piper", None)  # as if piper-tts were not installed
    with pytest.raises(ImportError, match=r"omnishift\[piper\]"):
        piper_tts.synthesize_piper("Hello there.")
