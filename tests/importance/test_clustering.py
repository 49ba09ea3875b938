"""Fig. 1 rank clustering: Top region, 3×3 vicinity density, the clustering score, the figure."""

from __future__ import annotations

import pytest
import torch

from omnishift.importance.clustering import (
    downsample, plot_rank_clustering, rank_clustering_score, select_matrices, top_region, vicinity_density,
)
from omnishift.importance.scores import MODULES, save_scores


def test_top_region_exact_count_and_ties():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(37, 53, generator=g)
    m = top_region(s, 0.05)
    assert m.dtype == torch.bool and m.shape == s.shape
    assert int(m.sum()) == round(0.05 * 37 * 53)
    assert s[m].min() >= s[~m].max()
    # all tied: the first k cells in row-major order, every call the same
    flat = top_region(torch.ones(4, 5), 0.3)
    assert int(flat.sum()) == 6 and flat.reshape(-1)[:6].all()
    # ties at the threshold only: the strict winners plus the first tied ones
    t = torch.tensor([[5.0, 1.0, 3.0], [3.0, 3.0, 0.0]])
    assert top_region(t, 3 / 6).tolist() == [[True, False, True], [True, False, False]]
    assert int(top_region(torch.rand(3, 3), 0.01).sum()) == 1  # never empty for fraction > 0
    with pytest.raises(ValueError, match="NaN"):
        top_region(torch.tensor([[float("nan"), 1.0]]))


def test_vicinity_density_by_hand():
    m = torch.tensor([[1, 0, 0, 0],
                      [0, 0, 0, 0],
                      [0, 0, 1, 1],
                      [0, 0, 1, 0]], dtype=torch.bool)
    d = vicinity_density(m)
    expected = torch.tensor([
        # corner (0,0): 4 cells {(0,0),(0,1),(1,0),(1,1)} -> 1 in region
        [1 / 4, 1 / 6, 0 / 6, 0 / 4],
        # (1,0) edge, 6 cells rows 0-2 x cols 0-1: (0,0) -> 1/6; (1,1) interior: (0,0),(2,2) -> 2/9;
        # (1,2) interior rows 0-2 x cols 1-3: (2,2),(2,3) -> 2/9; (1,3) edge: same two of 6 -> 2/6
        [1 / 6, 2 / 9, 2 / 9, 2 / 6],
        # (2,3) edge: rows 1-3 x cols 2-3 -> (2,2),(2,3),(3,2) -> 3/6
        [0 / 6, 2 / 9, 3 / 9, 3 / 6],
        # (3,3) corner: rows 2-3 x cols 2-3 -> 3/4; (3,0) corner -> 0
        [0 / 4, 2 / 6, 3 / 6, 3 / 4],
    ])
    assert torch.allclose(d, expected)
    assert vicinity_density(torch.ones(3, 5, dtype=torch.bool)).eq(1).all()  # borders not diluted


def test_downsample_shapes_and_means():
    x = torch.arange(16.0).reshape(4, 4)
    assert downsample(x, 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]  # 2x2 block means
    assert downsample(x, 2, reduce="max").tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert downsample(x, 8).shape == (4, 4)  # already small: unchanged
    assert downsample(torch.rand(1000, 300), 256).shape == (256, 256)
    assert downsample(torch.rand(1000, 100), 256).shape == (256, 100)


def _planted(h, w, density, lines, seed):
    """`lines` full rows + `lines` full columns, topped up with random cells to the same density."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(h, w, dtype=torch.bool)
    m[torch.randperm(h, generator=g)[:lines]] = True
    m[:, torch.randperm(w, generator=g)[:lines]] = True
    need = round(density * h * w) - int(m.sum())
    free = (~m).reshape(-1).nonzero().squeeze(1)
    m.view(-1)[free[torch.randperm(free.numel(), generator=g)[:need]]] = True
    return m


def test_rank_clustering_random_vs_planted():
    h, w, density = 192, 256, 0.05
    for seed in range(3):
        g = torch.Generator().manual_seed(100 + seed)
        rnd = top_region(torch.rand(h, w, generator=g), density)
        r = rank_clustering_score(rnd)
        assert 0.8 < r["score"] < 1.25, r
        assert 0.09 < r["random_share"] < 0.2
        p = rank_clustering_score(_planted(h, w, density, lines=5, seed=seed))
        assert p["score"] > 3, p
        assert p["share"] > 0.85
    # deterministic given the seed
    assert rank_clustering_score(rnd, seed=1) == rank_clustering_score(rnd, seed=1)
    assert torch.isnan(torch.tensor(rank_clustering_score(torch.zeros(4, 4, dtype=torch.bool))["score"]))


def _names(n_layers=3):
    out = ["model.embed_tokens.weight"]
    for i in range(n_layers):
        out += [f"model.layers.{i}.self_attn.{m}.weight" for m in ("q_proj", "k_proj", "v_proj", "o_proj")]
        out += [f"model.layers.{i}.self_attn.q_proj.bias", f"model.layers.{i}.input_layernorm.weight"]
        out += [f"model.layers.{i}.mlp.{m}.weight" for m in ("down_proj", "gate_proj", "up_proj")]
    return out


def test_select_matrices():
    names = _names(4)
    sel = select_matrices(names)
    assert [n.split(".")[-2] for n in sel] == list(MODULES)  # module order, no bias, no norm
    assert all(".layers.2." in n for n in sel)  # 4 layers -> 4 // 2
    assert select_matrices(names, layer=0, modules=("up_proj",)) == ["model.layers.0.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match="layer 9"):
        select_matrices(names, layer=9)


def _fake_scores(seed, planted):
    g = torch.Generator().manual_seed(seed)
    shapes = {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64),
              "gate_proj": (128, 64), "up_proj": (128, 64), "down_proj": (64, 128)}
    out = {"model.embed_tokens.weight": torch.rand(10, 64, generator=g)}
    for i in range(2):
        for m, shp in shapes.items():
            blk = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            s = torch.rand(shp, generator=g)
            if planted:
                s[:2] += 1.0
                s[:, 5:7] += 1.0
            out[f"model.layers.{i}.{blk}.{m}.weight"] = s
    return out


def test_plot_rank_clustering(tmp_path):
    save_scores(tmp_path / "text", _fake_scores(0, planted=True), {"modality": "text"})
    save_scores(tmp_path / "speech", _fake_scores(1, planted=False), {"modality": "speech"})
    png, scores = plot_rank_clustering({"text": tmp_path / "text", "speech": tmp_path / "speech"},
                                       tmp_path / "fig" / "rank.png", max_side=48)
    assert png.is_file() and png.stat().st_size > 5000
    assert list(png.parent.iterdir()) == [png]  # no temp file left behind
    assert set(scores) == {"text", "speech"}
    assert list(scores["text"]) == select_matrices(_fake_scores(0, False))  # layer 1 = 2 // 2
    assert all(v["score"] > 3 for v in scores["text"].values())
    assert all(0.7 < v["score"] < 1.4 for v in scores["speech"].values())
