"""Forgetting curves and their table, from probe points written as the trainer writes them."""

from __future__ import annotations

import json

import pytest

from omnishift.evaluate.drift import summarize
from omnishift.evaluate.scoring import paired_bootstrap_ci
from omnishift.report.forgetting import forgetting_table, plot_forgetting_curves, read_curve


def _set(kl: list[float], flips: list[float], correct: list[float] | None = None) -> dict:
    per = [{"tokens": 3, "kl": k, "dnll": k / 2, "flip": f} for k, f in zip(kl, flips)]
    for r, c in zip(per, correct or []):
        r["correct"] = c
    return {**summarize(per), "per_item": {m: [r[m] for r in per] for m in per[0]}}


def _run(tmp_path, name: str, kl_per_step: dict[int, list[float]], flips: list[float], qa: dict | None = None):
    """Probe points as the trainer writes them: a ``heldout`` set, and a ``qa`` set where ``qa`` gives
    per step (kl, correct)."""
    folder = tmp_path / name
    (folder / "probes").mkdir(parents=True)
    for step, kl in kl_per_step.items():
        sets = {"heldout": _set(kl, flips)}
        if qa:
            sets["qa"] = _set(qa[step][0], flips, qa[step][1])
        point = {"step": step, "probe": "p", "sets": sets}
        (folder / "probes" / f"step-{step:08d}.json").write_text(json.dumps(point))
    return folder


def test_curve_table_pairs_the_last_points_with_the_reference(tmp_path):
    full = _run(tmp_path, "full", {0: [0.0] * 4, 10: [0.1, 0.2, 0.3, 0.4], 2: [0.05] * 4}, [1.0, 0.0, 1.0, 1.0])
    lora = _run(tmp_path, "lora", {0: [0.0] * 4, 10: [0.05, 0.1, 0.1, 0.15]}, [0.0, 0.0, 1.0, 0.0])
    assert [p["step"] for p in read_curve(full)] == [0, 2, 10]
    t = forgetting_table({"Full-FT": full, "LoRA": lora}, reference="Full-FT")
    kl_diff = t.header.index("kl − Full-FT")
    assert t.rows[0][:3] == ["heldout", "Full-FT", "10"] and t.rows[0][kl_diff] == "-"
    mean, lo, hi = paired_bootstrap_ci([0.05, 0.1, 0.1, 0.15], [0.1, 0.2, 0.3, 0.4])
    assert t.rows[1][kl_diff] == f"{mean:.4f} ({lo:.4f}–{hi:.4f})" and mean == pytest.approx(-0.15)
    assert t.rows[1][3].startswith("0.1000 (")  # LoRA's mean KL at its last point
    assert t.rows[1][t.header.index("correct − Full-FT")] == "-"  # no QA set: no T2T
    with pytest.raises(ValueError, match="reference 'x' has no probe points"):
        forgetting_table({"Full-FT": full}, reference="x")


def test_a_qa_set_gives_t2t_per_point_and_its_paired_difference(tmp_path):
    qa_full = {0: ([0.0] * 4, [1.0, 1.0, 0.0, 0.0]), 10: ([0.3] * 4, [0.0, 1.0, 0.0, 0.0])}
    qa_lora = {0: ([0.0] * 4, [1.0, 1.0, 0.0, 0.0]), 10: ([0.1] * 4, [1.0, 1.0, 0.0, 1.0])}
    full = _run(tmp_path, "full", {0: [0.0] * 4, 10: [0.2] * 4}, [0.0] * 4, qa_full)
    lora = _run(tmp_path, "lora", {0: [0.0] * 4, 10: [0.1] * 4}, [0.0] * 4, qa_lora)
    t = forgetting_table({"Full-FT": full, "LoRA": lora}, reference="Full-FT")
    assert [r[:2] for r in t.rows] == [["heldout", "Full-FT"], ["heldout", "LoRA"], ["qa", "Full-FT"], ["qa", "LoRA"]]
    acc, diff = t.header.index("T2T accuracy"), t.header.index("correct − Full-FT")
    assert t.rows[2][acc].startswith("0.250 (") and t.rows[3][acc].startswith("0.750 (")
    mean, lo, hi = paired_bootstrap_ci([1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0])
    assert t.rows[3][diff] == f"{mean:.3f} ({lo:.3f}–{hi:.3f})" and mean == pytest.approx(0.5)
    png = plot_forgetting_curves({"Full-FT": full, "LoRA": lora}, tmp_path / "qa.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_points_written_before_named_sets_read_as_the_heldout_set(tmp_path):
    folder = tmp_path / "old"
    (folder / "probes").mkdir(parents=True)
    flat = {"step": 3, "probe": "p", **summarize([{"tokens": 2, "kl": 0.2, "dnll": 0.1, "flip": 1.0}])}
    (folder / "probes" / "step-00000003.json").write_text(json.dumps(flat))
    (point,) = read_curve(folder)
    assert point["step"] == 3 and point["sets"]["heldout"]["kl"] == pytest.approx(0.2)


def test_curves_are_drawn_and_a_run_without_points_is_named(tmp_path):
    full = _run(tmp_path, "full", {0: [0.0] * 3, 5: [0.2, 0.1, 0.3]}, [0.0, 1.0, 0.0])
    png = plot_forgetting_curves({"Full-FT": full, "none": tmp_path / "none"}, tmp_path / "f.png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no probe points"):
        plot_forgetting_curves({"none": tmp_path / "none"}, tmp_path / "g.png")
