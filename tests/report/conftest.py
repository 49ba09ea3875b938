"""Report fixtures: a hand-made run folder as a partial ``omnishift run`` leaves it."""

from __future__ import annotations

import json

import pytest
import yaml


def _summary(acc, bench, mode, n=4, row=None):
    return {"row": row, "accuracy": acc, "ci95": [max(0, acc - 0.1), min(1, acc + 0.1)], "n": n, "benchmark": bench, "mode": mode,
            "correct": int(acc * n)}


def _fake_run(tmp_path):
    """A run folder with only a few stages done (as after a partial run)."""
    run = tmp_path / "runs" / "fake"
    (run / "data").mkdir(parents=True)
    (run / "experiment.yaml").write_text(yaml.safe_dump({
        "name": "fake", "model": {"llm": "smollm2-135m-instruct", "encoder": "whisper-tiny.en", "k": 5,
                                  "frame_policy": "trim"},
        "train": {"methods": {"lora": {}}}, "evaluate": {"benchmarks": {"llama_questions": {"source": "llama_questions"}}}}))
    (run / "data" / "DONE").write_text(json.dumps({"seconds": 3.0, "finished": "2026-01-01T00:00:00"}))
    (run / "deactivation").mkdir()
    (run / "deactivation" / "rows.json").write_text(json.dumps({"fraction": 0.03, "model": "m", "rows": [
        {"input": "text", "base": 8.0, "top": 1e5, "bottom": 8.1, "random": 9.0, "zeroed": {"top": 10}}]}))
    (run / "deactivation" / "DONE").write_text(json.dumps({"seconds": 1.0}))
    for row, mode, acc in (("no_ft", "t2t", 0.5), ("lora", "t2t", 0.25), ("lora", "s2t", 0.25), ("cascade", "s2t", 0.75)):
        d = run / "evaluate" / row / "llama_questions" / mode
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_summary(acc, "llama_questions", mode, row=row)))
    return run



@pytest.fixture()
def fake_run():
    """``fake_run(tmp_path)`` -> a run folder with data, deactivation and four evaluations done."""
    return _fake_run
