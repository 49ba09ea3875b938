"""eq. 1 vs eq. 2 on a tiny Llama: the Taylor scores rank single-weight ablations correctly."""

from __future__ import annotations

import torch
from tiny_models import make_tiny_speech_llm

from omnishift.importance.validate import sample_parameters, validate_taylor
from omnishift.models.processor import t2t_prompt


def test_sample_covers_layers_and_modules(tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    params = dict(m.llm.named_parameters())
    picks = sample_parameters(params, 40, seed=1)
    assert len(picks) == 40 and len(set(picks)) > 35
    kinds = {name.split(".")[-2] for name, _ in picks}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= kinds
    assert all(0 <= i < params[n].numel() for n, i in picks)


def test_taylor_agrees_with_exact_ablation(tiny_tokenizer):
    m = make_tiny_speech_llm(tiny_tokenizer)
    before = {n: p.clone() for n, p in m.state_dict().items()}
    items = [{"prompt": t2t_prompt("What is two plus two?"), "response": "Four, of course."},
             {"prompt": t2t_prompt("Name a fruit."), "response": "An apple."}]
    res = validate_taylor(m, items, n=60, seed=0, progress=False)
    assert res["n"] == 60 and res["dtype"] == "float64"
    # A first-order estimate of single-weight removals on a smooth model ranks them near-perfectly.
    assert res["spearman"] > 0.9, res["spearman"]
    # And it is a real comparison: exact changes are positive and of the Taylor scale.
    exact = torch.tensor([r["exact"] for r in res["rows"]])
    taylor = torch.tensor([r["taylor"] for r in res["rows"]])
    assert exact.max() > 0 and (exact.median() / taylor.median()).item() < 10
    assert all(torch.equal(before[n], p) for n, p in m.state_dict().items()), "model must be untouched"
