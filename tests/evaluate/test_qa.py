"""QA evaluation on a tiny model: batched == one at a time, resume, bad manifests fail clearly."""

from __future__ import annotations

import json

import pytest
from tiny_models import make_tiny_speech_llm

from omnishift.data.manifest import Example
from omnishift.evaluate.qa import build_eval_items, evaluate


def _examples():
    qs = ["What is two plus two?", "Name a color", "Who wrote Hamlet, the play?", "Hi?", "Capital of Peru?"]
    return [Example(id=f"q{i}", text=q, answers=["x"]) for i, q in enumerate(qs)]


def test_batched_equals_unbatched_and_resumes(tmp_path, tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    items = build_eval_items(_examples(), "t2t")
    one = evaluate(m, items, tmp_path / "one", batch_size=1, max_new_tokens=5, progress=False)
    many = evaluate(m, items, tmp_path / "many", batch_size=4, max_new_tokens=5, progress=False)
    read = lambda d: {json.loads(x)["id"]: json.loads(x)["output"] for x in (d / "items.jsonl").read_text().splitlines()}  # noqa: E731
    assert read(tmp_path / "one") == read(tmp_path / "many")
    assert one["n"] == many["n"] == 5 and 0 <= one["ci95"][0] <= one["accuracy"] <= one["ci95"][1] <= 1
    # Resume: drop two answered items, rerun, and only those are answered again.
    lines = (tmp_path / "many" / "items.jsonl").read_text().splitlines()
    (tmp_path / "many" / "items.jsonl").write_text("\n".join(lines[:3]) + "\n")
    again = evaluate(m, items, tmp_path / "many", batch_size=4, max_new_tokens=5, progress=False)
    assert again["n"] == 5 and read(tmp_path / "many") == read(tmp_path / "one")


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="item 'q0' has no audio"):
        build_eval_items(_examples(), "s2t")
    with pytest.raises(ValueError, match="no reference answers"):
        build_eval_items([Example(id="z", text="q")], "t2t")
    with pytest.raises(ValueError, match="mode 'x2t' unknown"):
        build_eval_items(_examples(), "x2t")
