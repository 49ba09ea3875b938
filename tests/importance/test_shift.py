"""eq. 3 on known vectors, shift metrics, and the layer plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnishift.importance.scores import save_scores
from omnishift.importance.shift import (
    compare_layers, compare_score_dirs, js_divergence, layer_lr_coefficients, plot_layer_distributions, write_layer_lr,
)


def test_eq3_known_vector():
    coef = layer_lr_coefficients([1.0, 3.0, 2.0, 5.0], lam=0.4)
    # (I - min)/(max - min) = [0, .5, .25, 1] -> 1 - .4 * that
    assert coef == pytest.approx({0: 1.0, 1: 0.8, 2: 0.9, 3: 0.6})
    assert layer_lr_coefficients([2.0, 2.0]) == {0: 1.0, 1: 1.0}
    with pytest.raises(ValueError, match="λ"):
        layer_lr_coefficients([1, 2], lam=1.5)


def test_js_and_compare():
    a = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert js_divergence(a, a) == pytest.approx(0.0)
    assert js_divergence(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)
    b = np.array([0.0, 0.0, 0.0, 1.0, 2.0, 9.0]) + 1e-12
    r = compare_layers(a, b * 2)
    assert r["peak_layer"]["b"] == 5 and r["total_mass_ratio"] == pytest.approx(24 / 6)
    assert r["thirds"]["a"]["first"] == pytest.approx(1 / 3)
    assert r["thirds"]["b"]["last"] == pytest.approx(11 / 12)
    with pytest.raises(ValueError, match="layer counts differ"):
        compare_layers(a, a[:3])


def _fake_scores(weights):
    return {f"model.layers.{i}.mlp.up_proj.weight": torch.full((2, 2), w / 4) for i, w in enumerate(weights)} | {
        "model.embed_tokens.weight": torch.ones(3, 2)}


def test_score_dirs_round_trip(tmp_path):
    save_scores(tmp_path / "a", _fake_scores([1, 3, 2, 5]), {"modality": "text"})
    save_scores(tmp_path / "b", _fake_scores([5, 3, 2, 1]), {"modality": "text"})
    doc = write_layer_lr(tmp_path / "a", tmp_path / "lr.json")
    assert json.loads((tmp_path / "lr.json").read_text())["coefficients"] == {"0": 1.0, "1": 0.8, "2": 0.9, "3": 0.6}
    assert doc["lambda"] == 0.4
    r = compare_score_dirs(tmp_path / "a", tmp_path / "b")
    assert r["spearman_layers"] == pytest.approx(-0.8)
    png = plot_layer_distributions({"base": tmp_path / "a", "ft": tmp_path / "b"}, tmp_path / "fig.png")
    assert png.stat().st_size > 1000
    save_scores(tmp_path / "s", _fake_scores([1, 2]), {"modality": "speech"})
    with pytest.raises(ValueError, match="TEXT importance"):
        write_layer_lr(tmp_path / "s", tmp_path / "x.json")
