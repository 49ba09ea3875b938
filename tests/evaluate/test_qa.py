"""QA evaluation on a tiny model: batched == one at a time, resume, bad manifests fail clearly."""

from __future__ import annotations

import json

import pytest
from tiny_models import make_tiny_speech_llm

from omnishift.data.manifest import Example
from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate, select_subset


def _examples():
    qs = ["What is two plus two?", "Name a color", "Who wrote Hamlet, the play?", "Hi?", "Capital of Peru?"]
    return [Example(id=f"q{i}", text=q, answers=["x"]) for i, q in enumerate(qs)]


def test_batched_equals_unbatched_and_resumes(tmp_path, tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    items = build_eval_items(_examples(), "t2t")
    one = evaluate(m, items, tmp_path / "one", EvalSettings(batch_size=1, max_new_tokens=5, progress=False))
    many = evaluate(m, items, tmp_path / "many", EvalSettings(batch_size=4, max_new_tokens=5, progress=False))
    read = lambda d: {json.loads(x)["id"]: json.loads(x)["output"] for x in (d / "items.jsonl").read_text().splitlines()}  # noqa: E731
    assert read(tmp_path / "one") == read(tmp_path / "many")
    assert one["n"] == many["n"] == 5 and 0 <= one["ci95"][0] <= one["accuracy"] <= one["ci95"][1] <= 1
    # Resume: drop two answered items, rerun, and only those are answered again.
    lines = (tmp_path / "many" / "items.jsonl").read_text().splitlines()
    (tmp_path / "many" / "items.jsonl").write_text("\n".join(lines[:3]) + "\n")
    again = evaluate(m, items, tmp_path / "many", EvalSettings(batch_size=4, max_new_tokens=5, progress=False))
    assert again["n"] == 5 and read(tmp_path / "many") == read(tmp_path / "one")


def test_s2t_with_feature_cache_equals_raw_audio_and_encodes_each_clip_once(tmp_path, tiny_tokenizer, monkeypatch):
    import numpy as np

    import soundfile as sf

    from omnishift.models import feature_cache as fc

    rng = np.random.default_rng(0)
    exs = _examples()[:4]
    for i, e in enumerate(exs):
        e.audio = str(tmp_path / f"q{i}.wav")
        sf.write(e.audio, 0.1 * rng.standard_normal(1600 * (3 + 2 * i)), 16000, subtype="PCM_16")
    items = build_eval_items(exs, "s2t")
    read = lambda d: {json.loads(x)["id"]: json.loads(x)["output"] for x in (d / "items.jsonl").read_text().splitlines()}  # noqa: E731
    m = make_tiny_speech_llm(tiny_tokenizer)
    evaluate(m, items, tmp_path / "raw", EvalSettings(batch_size=2, max_new_tokens=5, progress=False))
    encoded, real = [], fc.EncoderFeatureCache.states

    def counting_states(self, audios):
        paths = real(self, audios)
        encoded.append(self.misses)  # clips this cache had to encode
        return paths

    monkeypatch.setattr(fc.EncoderFeatureCache, "states", counting_states)
    cached = evaluate(m, items, tmp_path / "cached", EvalSettings(batch_size=2, max_new_tokens=5, progress=False,
                                                                  feature_cache=tmp_path / "cache"))
    assert read(tmp_path / "cached") == read(tmp_path / "raw") and cached["n"] == 4
    # a second model with the same (frozen) encoder reuses every clip's encoding
    m2 = make_tiny_speech_llm(tiny_tokenizer)
    m2.encoder.load_state_dict(m.encoder.state_dict())
    evaluate(m2, items, tmp_path / "cached2", EvalSettings(batch_size=2, max_new_tokens=5, progress=False,
                                                                  feature_cache=tmp_path / "cache"))
    assert encoded == [4, 0]
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="item 'q0' has no audio"):
        build_eval_items(_examples(), "s2t")
    with pytest.raises(ValueError, match="no reference answers"):
        build_eval_items([Example(id="z", text="q")], "t2t")
    with pytest.raises(ValueError, match="mode 'x2t' unknown"):
        build_eval_items(_examples(), "x2t")


def test_subset_is_deterministic_and_model_independent():

    exs = [Example(id=f"wq{i:04d}", text=f"question {i}", answers=["a"]) for i in range(200)]
    a = select_subset(exs, 20, seed=7)
    b = select_subset(list(reversed(exs)), 20, seed=7)  # file order does not matter
    assert [e.id for e in a] == sorted(e.id for e in a) and len(a) == 20  # original order kept
    assert {e.id for e in a} == {e.id for e in b} == {e.id for e in select_subset(exs, 20, seed=7)}
    assert {e.id for e in select_subset(exs, 20, seed=8)} != {e.id for e in a}
    assert {e.id for e in a} <= {e.id for e in select_subset(exs, 50, seed=7)}  # nested: a bigger sample extends it
    assert select_subset(exs, None) == exs and select_subset(exs, 500) == exs
    with pytest.raises(ValueError, match="positive"):
        select_subset(exs, 0)


def test_summary_records_what_was_evaluated(tmp_path, tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    items = build_eval_items(_examples()[:2], "t2t")
    s = evaluate(m, items, tmp_path, EvalSettings(max_new_tokens=2, progress=False),
                 meta={"model": "tiny", "benchmark": "llama_questions", "mode": "t2t"})
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == s and (s["model"], s["benchmark"], s["mode"], s["n"]) == ("tiny", "llama_questions", "t2t", 2)


def test_load_benchmark_synthesizes_missing_audio_once(tmp_path):
    from omnishift.data.manifest import write_manifest
    from omnishift.evaluate.qa import load_benchmark

    src = write_manifest(tmp_path / "wq.jsonl", [Example(id=f"wq{i}", text=t, answers=["a"])
                                                 for i, t in enumerate(["what is love?", "who is bob?", "where is rome?"])])
    assert [e.audio for e in load_benchmark(str(src), ["t2t"])] == [None] * 3  # T2T needs no audio
    with pytest.raises(ValueError, match="has no recordings: pass --audio-dir"):
        load_benchmark(str(src), ["s2t"])
    exs = load_benchmark(str(src), ["t2t", "s2t"], subset=2, seed=1, audio_dir=tmp_path / "audio")
    assert len(exs) == 2 and all(e.audio and e.duration > 0 for e in exs)
    assert {e.id for e in exs} == {e.id for e in select_subset(load_benchmark(str(src)), 2, 1)}
    stamp = {e.id: (tmp_path / "audio" / "wavs" / f"{e.id}.wav").stat().st_mtime_ns for e in exs}
    again = load_benchmark(str(src), ["s2t"], subset=2, seed=1, audio_dir=tmp_path / "audio")
    assert [e.audio for e in again] == [e.audio for e in exs]
    assert stamp == {e.id: (tmp_path / "audio" / "wavs" / f"{e.id}.wav").stat().st_mtime_ns for e in again}  # reused


def test_cascade_is_s2t_only(tmp_path, capsys):
    from omnishift.cli import main

    assert main(["eval", "cascade", "--benchmark", "llama_questions", "--mode", "t2t", "--out", str(tmp_path)]) == 2
    assert "cascade is an S2T baseline" in capsys.readouterr().err


@pytest.mark.integration
def test_web_questions_subset_with_synthesized_audio(shared_data, tmp_path):
    from omnishift.evaluate.qa import load_benchmark

    a = load_benchmark("web_questions", ["s2t"], subset=3, seed=0, audio_dir=tmp_path)
    b = load_benchmark("web_questions", ["t2t"], subset=3, seed=0)
    assert [e.id for e in a] == [e.id for e in b] and len(a) == 3 and all(e.audio for e in a)
    items = build_eval_items(a, "s2t")
    assert all(it["audio"].size > 16000 * 0.5 for it in items)


def test_a_folder_evaluated_with_another_model_or_decoding_is_refused(tmp_path, tiny_tokenizer):
    """Issue 12.1: old answers were published under a new model's label by item id alone."""
    import torch

    m = make_tiny_speech_llm(tiny_tokenizer)
    items = build_eval_items(_examples(), "t2t")
    evaluate(m, items, tmp_path / "e", EvalSettings(batch_size=4, max_new_tokens=5, progress=False))
    other = make_tiny_speech_llm(tiny_tokenizer)
    with torch.no_grad():
        other.llm.lm_head.weight.add_(0.01) if not other.llm.config.tie_word_embeddings else \
            other.llm.get_input_embeddings().weight.add_(0.01)
    with pytest.raises(ValueError, match=r"made from other inputs \(fingerprint \w+ vs \w+; changed: \['model'\]\)"):
        evaluate(other, items, tmp_path / "e", EvalSettings(batch_size=4, max_new_tokens=5, progress=False))
    with pytest.raises(ValueError, match=r"changed: \['max_new_tokens'\]"):
        evaluate(m, items, tmp_path / "e", EvalSettings(batch_size=4, max_new_tokens=6, progress=False))


def test_an_edited_question_is_answered_again_and_a_torn_line_is_dropped(tmp_path, tiny_tokenizer, caplog):
    m = make_tiny_speech_llm(tiny_tokenizer)
    exs = _examples()
    evaluate(m, build_eval_items(exs, "t2t"), tmp_path / "e", EvalSettings(batch_size=4, max_new_tokens=5, progress=False))
    f = tmp_path / "e" / "items.jsonl"
    f.write_text(f.read_text() + '{"id": "q9", "outp')  # an interrupted write
    exs[1] = Example(id="q1", text="Name a fruit", answers=["x"])  # edited question, same id
    s = evaluate(m, build_eval_items(exs, "t2t"), tmp_path / "e", EvalSettings(batch_size=4, max_new_tokens=5, progress=False))
    recs = {json.loads(x)["id"]: json.loads(x) for x in f.read_text().splitlines()}
    assert s["n"] == 5 and recs["q1"]["question"] == "Name a fruit" and "q9" not in recs
    assert "torn last line" in caplog.text


def test_a_legacy_folder_without_a_record_is_refused(tmp_path, tiny_tokenizer):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "items.jsonl").write_text('{"id": "q0", "output": "4", "correct": true}\n')
    with pytest.raises(ValueError, match="no record of what produced it; evaluate into a new --out"):
        evaluate(make_tiny_speech_llm(tiny_tokenizer), build_eval_items(_examples(), "t2t"), tmp_path / "e",
                 EvalSettings(max_new_tokens=5, progress=False))


def test_eval_settings_are_one_validated_value(tmp_path):
    from omnishift.evaluate.qa import BenchmarkSelection

    with pytest.raises(ValueError, match="prompt"):
        EvalSettings(prompt="chatty")
    with pytest.raises(ValueError, match="batch_size"):
        EvalSettings(batch_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        EvalSettings(max_new_tokens=0)
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{i}", "text": f"Q{i}?", "answers": ["a"]}) + "\n" for i in range(6)))
    sel = BenchmarkSelection(limit=5, subset=3, seed=1)
    got = sel.load(str(qa))
    first5 = BenchmarkSelection(limit=5).load(str(qa))
    assert [e.id for e in first5] == [f"q{i}" for i in range(5)]
    assert [e.id for e in got] == [e.id for e in select_subset(first5, 3, seed=1)]
    assert len(got) == 3 and sel.meta() == {"limit": 5, "subset": 3, "seed": 1}
