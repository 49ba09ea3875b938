"""Decoding a run's clips up front: two processes write exactly the entries the readers look up."""

import json

from tiny_models import save_tiny_parts, tone

from omnishift.align.decode import decode_clips
from omnishift.data.manifest import Example, write_manifest
from omnishift.data.synth import write_wav
from omnishift.models.speech_llm import SpeechLLM


def _setup(tmp_path, tok):
    parts = save_tiny_parts(tmp_path / "parts", tok, seed=3, adaptor_norm=True, ctc_head=True, frame_policy="clip", k=1)
    parts.speech_input, parts.ctc_decoding = "ctc_top1", {"beam": 2, "lm_weight": 0.5}
    SpeechLLM.from_config(parts).save_pretrained(tmp_path / "model", llm_is_base=True)
    exs = []
    for i in range(5):
        write_wav(tmp_path / f"c{i}.wav", tone(0.5 + 0.2 * i, seed=i))
        exs.append(Example(id=f"c{i}", text="x", audio=str(tmp_path / f"c{i}.wav")))
    write_manifest(tmp_path / "a.jsonl", exs[:3])
    write_manifest(tmp_path / "b.jsonl", exs[2:])  # c2 in both: decoded once
    return tmp_path / "model", [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]


def test_two_processes_decode_what_one_does(tmp_path, tiny_tokenizer):
    model_dir, manifests = _setup(tmp_path, tiny_tokenizer)
    one = decode_clips(model_dir, tmp_path / "fc1", manifests, raw=[manifests[0]], raw_limit=2, workers=1)
    two = decode_clips(model_dir, tmp_path / "fc2", manifests, raw=[manifests[0]], raw_limit=2, workers=2, batch=2)
    # 5 clips through the feature cache + 2 raw (a raw clip whose states equal its cached ones is a hit)
    assert one["clips"] == two["clips"] == 7 and one["decoded"] >= 5 and two["decoded"] >= 5

    def entries(root):
        return {f.name: json.loads(f.read_text())["tokens"] for f in (root / "ctc_tokens").rglob("*.json")}

    assert entries(tmp_path / "fc1") == entries(tmp_path / "fc2") and len(entries(tmp_path / "fc1")) == one["decoded"]
    again = decode_clips(model_dir, tmp_path / "fc1", manifests, workers=1)
    assert again == {"clips": 5, "cached_before": 5, "decoded": 0}


def test_a_worker_that_cannot_load_the_model_fails_the_call(tmp_path, tiny_tokenizer):
    import pytest
    from concurrent.futures.process import BrokenProcessPool

    _, manifests = _setup(tmp_path, tiny_tokenizer)
    with pytest.raises((BrokenProcessPool, FileNotFoundError)):
        decode_clips(tmp_path / "no_model", tmp_path / "fc", manifests, workers=2)
