"""Score files: the streaming safetensors writer is readable by safetensors itself, in fp32 and bf16."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from omnishift.importance.scores import aggregate, load_scores, save_scores, write_safetensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_writer_round_trips_through_safetensors(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    t = {"model.layers.0.mlp.up_proj.weight": torch.rand(5, 3, generator=g), "model.norm.weight": torch.rand(7, generator=g)}
    write_safetensors(tmp_path / "x.safetensors", t, {"k": "v"}, dtype=dtype)
    back = load_file(tmp_path / "x.safetensors")
    for k in t:
        assert back[k].dtype == dtype and torch.equal(back[k], t[k].to(dtype))


def test_save_scores_writes_aggregates(tmp_path):
    scores = {"model.layers.0.self_attn.q_proj.weight": torch.ones(2, 2),
              "model.layers.1.mlp.down_proj.weight": torch.full((2, 2), 3.0),
              "model.embed_tokens.weight": torch.ones(4, 2)}
    save_scores(tmp_path, scores, {"mode": "dataset"}, dtype=torch.bfloat16)
    back, meta = load_scores(tmp_path)
    assert meta["mode"] == "dataset" and back["model.layers.1.mlp.down_proj.weight"].dtype == torch.float32
    layers, modules = aggregate(back)
    assert layers == {0: 4.0, 1: 12.0} and modules[(None, "embed_tokens")] == 8.0
    assert (tmp_path / "layers.csv").read_text().splitlines()[1].startswith("0,")
