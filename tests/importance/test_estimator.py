"""Taylor importance equals hand-computed |g·θ| (2-layer MLP) and HF-autograd references (tiny Llama)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_speech_llm, tone

from omnishift.importance.estimator import ImportanceConfig, compute_importance, select_items, taylor_scores
from omnishift.importance.scores import load_scores, parse_param_name
from omnishift.models.processor import s2t_prompt, t2t_prompt


def _mlp_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    W1, b1 = torch.randn(5, 3, generator=g), torch.randn(5, generator=g)
    W2, b2 = torch.randn(2, 5, generator=g), torch.randn(2, generator=g)
    batches = [(torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)) for n in (3, 1, 4)]
    return (W1, b1, W2, b2), batches


def _hand_grads(W1, b1, W2, b2, x, t):
    """Backprop written out for L = 0.5 Σ (W2 relu(W1 x + b1) + b2 - t)^2."""
    pre = x @ W1.T + b1  # N, 5
    h = pre.clamp(min=0)
    dy = h @ W2.T + b2 - t  # N, 2
    dh = (dy @ W2) * (pre > 0)
    return {"W1": dh.T @ x, "b1": dh.sum(0), "W2": dy.T @ h, "b2": dy.sum(0)}


@pytest.mark.parametrize("mode", ["dataset", "batch"])
def test_mlp_scores_equal_hand_computed(mode):
    (W1, b1, W2, b2), batches = _mlp_problem()
    params = {k: torch.nn.Parameter(v.clone()) for k, v in zip(("W1", "b1", "W2", "b2"), (W1, b1, W2, b2))}

    def batch_loss(b):
        x, t = batches[b]
        y = torch.relu(x @ params["W1"].T + params["b1"]) @ params["W2"].T + params["b2"]
        return 0.5 * ((y - t) ** 2).sum(), x.shape[0]

    total = sum(x.shape[0] for x, _ in batches)
    scores, tokens = taylor_scores(params, batch_loss, len(batches), total, ImportanceConfig(mode=mode))
    assert tokens == total
    theta = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    if mode == "dataset":
        grads = [_hand_grads(W1, b1, W2, b2, x, t) for x, t in batches]
        expected = {k: (sum(g[k] for g in grads) / total * theta[k]).abs() for k in theta}
    else:
        expected = {k: sum((_hand_grads(W1, b1, W2, b2, x, t)[k] / x.shape[0] * theta[k]).abs() for x, t in batches)
                    for k in theta}
    for k in theta:
        torch.testing.assert_close(scores[k], expected[k], rtol=1e-5, atol=1e-7)


def test_modes_differ_when_batch_gradients_cancel():
    """Two batches with opposite gradients: dataset mode sees ~0, batch mode does not."""
    p = {"w": torch.nn.Parameter(torch.tensor([2.0]))}
    signs = [1.0, -1.0]
    fn = lambda b: (signs[b] * p["w"].sum(), 1)  # noqa: E731
    d, _ = taylor_scores(p, fn, 2, 2, ImportanceConfig(mode="dataset"))
    b, _ = taylor_scores(p, fn, 2, 2, ImportanceConfig(mode="batch"))
    assert d["w"].item() == 0.0 and b["w"].item() == pytest.approx(4.0)


def _items():
    qs = ["What is two plus two?", "Name a color.", "Why is the sky blue?", "Say hi.", "Count to three."]
    rs = ["Four.", "Blue.", "Rayleigh scattering.", "Hi!", "One, two, three."]
    return [{"prompt": t2t_prompt(q), "response": r} for q, r in zip(qs, rs)]


@pytest.mark.parametrize("mode", ["dataset", "batch"])
def test_tiny_llama_matches_hf_autograd(tmp_path, tiny_tokenizer, mode):
    model = make_tiny_speech_llm(tiny_tokenizer)
    items = _items()
    cfg = ImportanceConfig(mode=mode, batch_size=2, fraction=1.0)
    compute_importance(model, items, cfg, tmp_path / "imp", progress=False)
    scores, meta = load_scores(tmp_path / "imp")
    params = dict(model.llm.named_parameters())
    assert set(scores) == set(params) and meta["mode"] == mode
    assert "model.embed_tokens.weight" in scores and any("mlp.down_proj" in k for k in scores)
    ordered = select_items(items, 1.0, cfg.seed)
    groups = [ordered] if mode == "dataset" else [ordered[i:i + 2] for i in range(0, len(ordered), 2)]
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for group in groups:  # HF's own mean-token loss over the group
        loss = model(model.processor(group)).loss
        grads = torch.autograd.grad(loss, list(params.values()))
        for (n, p), g in zip(params.items(), grads):
            expected[n] += (g * p).abs().detach()
    for n in params:
        torch.testing.assert_close(scores[n], expected[n], rtol=1e-4, atol=1e-9, msg=n)
    assert all(p.grad is None for p in model.parameters()), "the pass must leave no gradients behind"


def test_speech_modality_scores_llm_only(tmp_path, tiny_tokenizer):
    model = make_tiny_speech_llm(tiny_tokenizer)
    items = [{"prompt": s2t_prompt(), "audio": tone(1.0, seed=i), "response": "Answer."} for i in range(3)]
    compute_importance(model, items, ImportanceConfig(modality="speech", batch_size=2), tmp_path / "s", progress=False)
    scores, meta = load_scores(tmp_path / "s")
    assert meta["modality"] == "speech" and meta["tokens_seen"] > 0
    assert set(scores) == {n for n, _ in model.llm.named_parameters()}
    assert sum(float(s.sum()) for s in scores.values()) > 0


@pytest.mark.parametrize("mode", ["dataset", "batch"])
def test_interrupted_pass_resumes_to_same_scores(tmp_path, tiny_tokenizer, mode, monkeypatch):
    items = _items() * 2
    cfg = ImportanceConfig(mode=mode, batch_size=2, save_every=1)
    ref_model = make_tiny_speech_llm(tiny_tokenizer)
    compute_importance(ref_model, items, cfg, tmp_path / "ref", progress=False)
    ref, _ = load_scores(tmp_path / "ref")

    model = make_tiny_speech_llm(tiny_tokenizer)
    real_forward, calls = model.forward, {"n": 0}

    def dying_forward(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return real_forward(*a, **k)

    monkeypatch.setattr(model, "forward", dying_forward)
    with pytest.raises(KeyboardInterrupt):
        compute_importance(model, items, cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "state" / "progress.json").is_file()
    monkeypatch.setattr(model, "forward", real_forward)
    compute_importance(model, items, cfg, tmp_path / "run", progress=False)
    got, meta = load_scores(tmp_path / "run")
    assert not (tmp_path / "run" / "state").exists()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-6, atol=0, msg=n)
    with pytest.raises(ValueError, match="no record of what produced it"):  # a state from before PRODUCED_BY
        (tmp_path / "run2" / "state").mkdir(parents=True)
        import json
        (tmp_path / "run2" / "state" / "progress.json").write_text(json.dumps({"config": {}, "batches_done": 1, "tokens": 1}))
        compute_importance(model, items, cfg, tmp_path / "run2", progress=False)


def test_parse_param_name():
    assert parse_param_name("model.layers.3.self_attn.q_proj.weight") == (3, "q_proj")
    assert parse_param_name("base_model.model.model.layers.12.mlp.down_proj.base_layer.weight") == (12, "down_proj")
    assert parse_param_name("model.layers.0.input_layernorm.weight") == (0, "input_layernorm")
    assert parse_param_name("model.embed_tokens.weight") == (None, "embed_tokens")


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="mode 'sum' unknown"):
        ImportanceConfig(mode="sum")
    with pytest.raises(ValueError, match="fraction"):
        ImportanceConfig(fraction=0)


def test_finished_pass_is_reused_only_for_the_same_model_items_and_settings(tmp_path, tiny_tokenizer, monkeypatch):
    items = _items()
    cfg = ImportanceConfig(mode="dataset", batch_size=2)
    model = make_tiny_speech_llm(tiny_tokenizer)
    compute_importance(model, items, cfg, tmp_path / "s", progress=False)
    before = (tmp_path / "s" / "scores.safetensors").read_bytes()
    monkeypatch.setattr(model, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert compute_importance(model, items, cfg, tmp_path / "s", progress=False) == tmp_path / "s"  # reused
    assert (tmp_path / "s" / "scores.safetensors").read_bytes() == before
    other = make_tiny_speech_llm(tiny_tokenizer, seed=1)
    with pytest.raises(ValueError, match=r"made from other inputs .*changed: \['model'\]"):
        compute_importance(other, items, cfg, tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match=r"changed: \['items'\]"):
        compute_importance(model, items[:1], cfg, tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match=r"changed: \['config'\]"):
        compute_importance(model, items, ImportanceConfig(mode="dataset", batch_size=1), tmp_path / "s", progress=False)
