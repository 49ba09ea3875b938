"""Table 2 from hand-made summary files."""

from __future__ import annotations

import json

import pytest

from omnishift.cli import main
from omnishift.evaluate.table import benchmark_key, write_table


def _summary(path, benchmark, mode, correct, n, ci, **kw):
    path.mkdir(parents=True, exist_ok=True)
    s = {"model": kw.pop("model", "m"), "benchmark": benchmark, "mode": mode, "n": n, "correct": correct,
         "accuracy": correct / n, "ci95": ci, **kw}
    (path / "summary.json").write_text(json.dumps(s))


def test_table_from_summaries(tmp_path, capsys):
    _summary(tmp_path / "base" / "lq" / "t2t", "llama_questions", "t2t", 99, 300, [0.2767, 0.3833], model="base")
    _summary(tmp_path / "base" / "wq" / "t2t", "web_questions", "t2t", 100, 500, [0.174, 0.226], model="base")
    _summary(tmp_path / "cascade" / "s2t", "llama_questions", "s2t", 87, 300, [0.24, 0.34], model="cascade", wer=0.1)
    _summary(tmp_path / "lora" / "t2t", "llama_questions", "t2t", 90, 300, [0.25, 0.35])
    _summary(tmp_path / "lora" / "s2t", "llama_questions", "s2t", 30, 300, [0.067, 0.133])
    (tmp_path / "lora" / "train").mkdir()
    (tmp_path / "lora" / "train" / "summary.json").write_text('{"method": "lora"}')  # not an eval: ignored
    out = tmp_path / "t" / "table2.md"
    assert main(["eval-table", f"No-FT={tmp_path / 'base'}", str(tmp_path / "cascade"), f"LoRA={tmp_path / 'lora'}",
                 "--out", str(out)]) == 0
    lines = out.read_text().splitlines()[2:]  # after the caption (omnishift.evaluate.table.accuracy_table)
    assert lines[0] == "| Model | LLaMA Q T2T | LLaMA Q S2T | Web Q T2T | Web Q S2T |"
    assert lines[2] == "| No-FT | 33.0 (27.7–38.3) | - | 20.0 (17.4–22.6) | - |"
    assert lines[3] == "| cascade | - | 29.0 (24.0–34.0) | - | - |"  # row named by its summary's model
    assert lines[4] == "| LoRA | 30.0 (25.0–35.0) | 10.0 (6.7–13.3) | - | - |"
    assert "LLaMA Q T2T 300" in lines[6] and "Web Q T2T 500" in lines[6] and "Web Q S2T -" in lines[6]
    csv_rows = (tmp_path / "t" / "table2.csv").read_text().splitlines()
    assert csv_rows[0] == "model,benchmark,mode,accuracy,ci_low,ci_high,n,wer"
    assert csv_rows[3] == "cascade,llama_questions,s2t,0.29,0.24,0.34,300,0.1"
    assert len(csv_rows) == 1 + 5


def test_table_errors(tmp_path):
    _summary(tmp_path / "a" / "x", "llama_questions", "t2t", 1, 2, [0, 1])
    _summary(tmp_path / "a" / "y", "llama_questions", "t2t", 1, 2, [0, 1])
    with pytest.raises(ValueError, match="row 'A' has two llama_questions t2t results"):
        write_table([f"A={tmp_path / 'a'}"], tmp_path / "t.md")
    old = tmp_path / "old" / "summary.json"
    old.parent.mkdir()
    old.write_text('{"accuracy": 0.5, "n": 2, "correct": 1, "ci95": [0, 1]}')
    with pytest.raises(ValueError, match="no \\['benchmark', 'mode'\\] recorded; re-run"):
        write_table([str(old.parent)], tmp_path / "t.md")
    with pytest.raises(FileNotFoundError, match="no evaluation summary.json"):
        write_table([str(tmp_path / "empty")], tmp_path / "t.md")


def test_benchmark_key():
    assert benchmark_key("web_questions:test") == benchmark_key("web_questions") == "web_questions"
    assert benchmark_key("web_questions:train") == "web_questions:train"
    assert benchmark_key("/data/my_qa.jsonl") == "my_qa"
