"""Paired accuracy differences: hand-made items, the pairs a study shows, and the report's table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from omnishift.report.build import build_report, eval_cells
from omnishift.report.paired import comparisons, paired_difference, paired_table, trained_modality, verdicts


def _items(folder, correct: dict[str, bool], row: str, mode: str = "t2t", bench: str = "llama_questions"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps({"id": i, "output": "x", "correct": c}) + "\n"
                                                for i, c in correct.items()))
    acc = sum(correct.values()) / len(correct)
    (folder / "summary.json").write_text(json.dumps({"row": row, "benchmark": bench, "mode": mode, "accuracy": acc,
                                                     "ci95": [0, 1], "n": len(correct)}))


def test_difference_is_over_the_shared_ids_and_its_interval_is_tighter_than_unpaired():
    rng = np.random.default_rng(0)
    base = rng.random(300) < 0.4
    b = {f"q{i}": float(v) for i, v in enumerate(base)}
    a = dict(b)
    for i in range(0, 30):  # a loses 30 of b's questions... and gains none
        a[f"q{i}"] = 0.0
    lost = sum(b[f"q{i}"] for i in range(30))
    a["only_a"] = 1.0  # not answered by b: left out
    mean, lo, hi, n = paired_difference(a, b)
    assert n == 300 and mean == pytest.approx(-lost / 300)
    assert lo <= mean <= hi <= 0.0  # every change is a loss: the interval cannot reach above 0
    assert hi - lo < 0.1  # two unpaired 300-question intervals are each ~0.11 wide
    with pytest.raises(ValueError, match="share no question id"):
        paired_difference({"x": 1.0}, {"y": 0.0})


def test_verdicts_name_the_line_of_an_item_without_a_verdict(tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text(json.dumps({"id": "a", "correct": True}) + "\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"items.jsonl:2: an item without 'id' or 'correct'"):
        verdicts(f)


def test_pairs_are_methods_against_the_reference_and_the_text_control_against_speech_methods():
    mods = {"frozen": "speech", "text_control": "text", "full": "speech", "lora": "speech"}
    pairs = comparisons(mods, "full")
    assert pairs == [("frozen", "full", ("t2t", "s2t")), ("lora", "full", ("t2t", "s2t")),
                     ("text_control", "frozen", ("t2t",)), ("text_control", "full", ("t2t",)),
                     ("text_control", "lora", ("t2t",))]
    assert all(p[1] != "nope" for p in comparisons(mods, "nope")) and len(comparisons(mods, "nope")) == 3


def test_modality_comes_from_what_trained_the_run_not_its_label(tmp_path):
    for label, cfg in (("tc", {"method": {"name": "text_control"}}), ("x", {"method": {"name": "full"},
                                                                             "data": {"modality": "text"}}),
                       ("sp", {"method": {"name": "lora"}})):
        (tmp_path / label).mkdir()
        (tmp_path / label / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert [trained_modality(tmp_path / k) for k in ("tc", "x", "sp", "absent")] == ["text", "text", "speech", None]


def test_table_rows_for_evaluated_pairs_only(tmp_path):
    ev = tmp_path / "evaluate"
    _items(ev / "full" / "llama_questions" / "t2t", {"a": True, "b": True, "c": False, "d": False}, "full")
    _items(ev / "lora" / "llama_questions" / "t2t", {"a": True, "b": True, "c": True, "d": False}, "lora")
    cells, _, benches = eval_cells(ev)
    t = paired_table(cells, [("lora", "full", ("t2t", "s2t"))], benches)
    assert len(t.rows) == 1  # no S2T evaluation: no row
    assert t.rows[0][:5] == ["lora − full", "llama_questions", "T2T", "75.0", "50.0"]
    assert t.rows[0][5].startswith("+25.0 (") and t.rows[0][6] == "4"


def test_report_shows_the_paired_table_with_the_configured_reference(tmp_path, fake_run):
    run = fake_run(tmp_path)
    exp = yaml.safe_load((run / "experiment.yaml").read_text())
    exp["train"]["methods"] = {"full": {}, "lora": {}, "text_control": {}}
    exp["report"] = {"reference": "full"}
    (run / "experiment.yaml").write_text(yaml.safe_dump(exp))
    for label in exp["train"]["methods"]:
        (run / "train" / label).mkdir(parents=True)
        (run / "train" / label / "config.yaml").write_text(yaml.safe_dump({"method": {"name": label}}))
    ev = run / "evaluate"
    for row, got in (("full", [1, 0, 0, 1]), ("lora", [1, 1, 0, 1]), ("text_control", [1, 1, 1, 1])):
        _items(ev / row / "llama_questions" / "t2t", {f"q{i}": bool(v) for i, v in enumerate(got)}, row)
    md = build_report(run).with_name("report.md").read_text()
    assert "Accuracy differences on the same questions" in md
    assert "| LoRA − Full-FT | LLaMA Q | T2T | 75.0 | 50.0 | +25.0" in md.replace("LLaMA Questions", "LLaMA Q")
    assert "| Text control − LoRA | " in md and "| Text control − Full-FT | " in md
