"""Deactivation on a tiny Llama: exact counts, restoration, and the ordering top >> random >= bottom."""

from __future__ import annotations

import torch
from tiny_models import make_tiny_speech_llm

from omnishift.importance.deactivate import deactivation_table, perplexity, write_table
from omnishift.importance.estimator import ImportanceConfig, compute_importance
from omnishift.models.processor import t2t_prompt


def _items(n, offset=0):
    words = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "rock", "fish"]
    return [{"prompt": t2t_prompt(f"Repeat: {words[(i + offset) % 10]}"), "response": words[(i + offset) % 10] * 2}
            for i in range(n)]


def test_deactivation_table(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    m = make_tiny_speech_llm(tiny_tokenizer)
    # Make the tiny model non-trivial: a few steps of training so importance has structure.
    opt = torch.optim.Adam(m.llm.parameters(), lr=3e-3)
    train = _items(10)
    for _ in range(30):
        loss = m(m.processor(train)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    compute_importance(m, train, ImportanceConfig(batch_size=5), tmp_path / "imp", progress=False)
    before = {n: p.clone() for n, p in m.state_dict().items()}
    held = _items(6, offset=3)
    rows = deactivation_table(m, tmp_path / "imp", {"text": held}, fraction=0.03, progress=False, scope="all")
    r = rows[0]
    assert r["base"] == perplexity(m, held)
    total = sum(p.numel() for p in m.llm.parameters())
    assert r["zeroed"]["top"] == r["zeroed"]["bottom"] == round(0.03 * total)
    assert abs(r["zeroed"]["random"] - 0.03 * total) < 0.001 * total + len(before)
    assert r["top"] > 2 * r["random"] and r["top"] > 2 * r["bottom"]
    assert abs(r["bottom"] - r["base"]) / r["base"] < 0.05
    assert all(torch.equal(before[n], p) for n, p in m.state_dict().items()), "weights must be restored"
    md, csv_path = write_table(rows, tmp_path, 0.03, label="tiny")
    assert "Top 3%" in md.read_text() and csv_path.read_text().count("\n") == 2
    per = deactivation_table(m, tmp_path / "imp", {"text": held}, per_matrix=True, progress=False, scope="all")[0]
    assert per["top"] > per["bottom"]
    layers = deactivation_table(m, tmp_path / "imp", {"text": held}, progress=False)[0]
    n_layer = sum(p.numel() for n, p in m.llm.named_parameters() if ".layers." in n and p.dim() == 2)
    assert layers["zeroed"]["top"] == round(0.03 * n_layer) and layers["top"] > layers["bottom"]
