"""The alignment set: deterministic clips, resumable shards, refusal of a set made from other inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import make_tiny_encoder

from omnishift.align.augment import AugmentConfig, augment
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

    texts = alignment_texts(shared_data)
    keys = {_norm(t) for _, t in texts}
    assert len(texts) > 15000 and len(keys) == len(texts)
    assert not keys & {_norm(e.text) for e in load_llama_questions(shared_data)}
    assert not keys & {_norm(e.text) for e in load_web_questions("test", shared_data)}
