"""Forgetting curves and their table, from probe points written as the trainer writes them."""

from __future__ import annotations

import json

import pytest

from omnishift.evaluate.drift import summarize
from omnishift.evaluate.scoring import paired_bootstrap_ci
from omnishift.report.forgetting import forgetting_table, plot_forgetting_curves, read_curve


def _run(tmp_path, name: str, kl_per_step: dict[int, list[float]], flips: list[float]):
    folder = tmp_path / name
    (folder / "probes").mkdir(parents=True)
    for step, kl in kl_per_step.items():
        per = [{"tokens": 3, "kl": k, "dnll": k / 2, "flip": f} for k, f in zip(kl, flips)]
        point = {"step": step, "probe": "p", **summarize(per),
                 "per_item": {m: [r[m] for r in per] for m in ("kl", "dnll", "flip")}}
        (folder / "probes" / f"step-{step:08d}.json").write_text(json.dumps(point))
    return folder


def test_curve_table_pairs_the_last_points_with_the_reference(tmp_path):
    full = _run(tmp_path, "full", {0: [0.0] * 4, 10: [0.1, 0.2, 0.3, 0.4], 2: [0.05] * 4}, [1.0, 0.0, 1.0, 1.0])
    lora = _run(tmp_path, "lora", {0: [0.0] * 4, 10: [0.05, 0.1, 0.1, 0.15]}, [0.0, 0.0, 1.0, 0.0])
    assert [p["step"] for p in read_curve(full)] == [0, 2, 10]
    t = forgetting_table({"Full-FT": full, "LoRA": lora}, reference="Full-FT")
    assert t.rows[0][0] == "Full-FT" and t.rows[0][-1] == "-" and t.rows[0][1] == "10"
    mean, lo, hi = paired_bootstrap_ci([0.05, 0.1, 0.1, 0.15], [0.1, 0.2, 0.3, 0.4])
    assert t.rows[1][-2] == f"{mean:.4f} ({lo:.4f}–{hi:.4f})" and mean == pytest.approx(-0.15)
    assert t.rows[1][2].startswith("0.1000 (")  # LoRA's mean KL at its last point
    with pytest.raises(ValueError, match="reference 'x' has no probe points"):
        forgetting_table({"Full-FT": full}, reference="x")


def test_curves_are_drawn_and_a_run_without_points_is_named(tmp_path):
    full = _run(tmp_path, "full", {0: [0.0] * 3, 5: [0.2, 0.1, 0.3]}, [0.0, 1.0, 0.0])
    png = plot_forgetting_curves({"Full-FT": full, "none": tmp_path / "none"}, tmp_path / "f.png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no probe points"):
        plot_forgetting_curves({"none": tmp_path / "none"}, tmp_path / "g.png")
