"""Each training method trains what it claims and nothing else (bitwise), at the LRs it claims."""

from __future__ import annotations

import json

import pytest
import torch

from omnishift.importance.scores import MODULES, parse_param_name, save_scores
from omnishift.importance.shift import layer_lr_coefficients, write_layer_lr
from omnishift.models.speech_llm import SpeechLLM
from omnishift.train.methods import setup_method
from omnishift.train.region_freeze import top_fraction_indices
from omnishift.train.trainer import build_model, build_optimizer, train


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _fake_text_scores(model: SpeechLLM, folder, seed: int = 0):
    """Random non-negative scores for every LLM parameter, layer 1 weighted 3x; saved as a score folder."""
    g = torch.Generator().manual_seed(seed)
    scores = {}
    for n, p in model.llm.named_parameters():
        s = torch.rand(p.shape, generator=g)
        scores[n] = s * 3 if parse_param_name(n).layer == 1 else s
    save_scores(folder, scores, {"modality": "text"})
    return scores


def test_layer_lr_groups_follow_eq3(tmp_path, make_config, speech_items):
    base = build_model(make_config())
    scores = _fake_text_scores(base, tmp_path / "scores")
    coef_file = tmp_path / "layer_lr.json"
    doc = write_layer_lr(tmp_path / "scores", coef_file, lam=0.4)
    coef = {int(k): v for k, v in doc["coefficients"].items()}
    layer_sums = [sum(float(s.double().sum()) for n, s in scores.items() if parse_param_name(n).layer == i) for i in (0, 1)]
    assert coef == layer_lr_coefficients(layer_sums, 0.4) and coef[1] == pytest.approx(0.6) and coef[0] == 1.0

    cfg = make_config("layer_lr", {"coefficients": str(coef_file)}, optim={"lr": 1e-3, "adaptor_lr": 5e-3})
    model = build_model(cfg)
    groups = setup_method(model, cfg.method.name, cfg.method.options)
    opt = build_optimizer(groups, cfg)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"adaptor", "llm.layer.0", "llm.layer.1", "llm.other"}
    assert by_name["adaptor"]["lr"] == 5e-3
    for i in (0, 1):
        assert by_name[f"llm.layer.{i}"]["lr"] == pytest.approx(1e-3 * coef[i], rel=1e-12)
    assert by_name["llm.other"]["lr"] == 1e-3  # embeddings (tied lm_head) + final norm: scale 1.0
    group_of = {id(p): g["name"] for g in opt.param_groups for p in g["params"]}
    for n, p in model.llm.named_parameters():
        layer = parse_param_name(n).layer
        assert group_of[id(p)] == ("llm.other" if layer is None else f"llm.layer.{layer}"), n
    assert all(group_of[id(p)] == "adaptor" for p in model.adaptor.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len([p for p in model.parameters() if p.requires_grad])

    decayed = build_optimizer(groups, make_config("layer_lr", {"coefficients": str(coef_file)},
                                                  optim={"lr": 1e-3, "adaptor_lr": 5e-3, "weight_decay": 0.1}))
    for g in decayed.param_groups:  # nanoGPT: matrices decay, biases / norm gains do not, at the group's LR
        assert g["weight_decay"] == (0.0 if g["name"].endswith(".no_decay") else 0.1)
        assert all((p.dim() >= 2) == (not g["name"].endswith(".no_decay")) for p in g["params"])
        assert g["lr"] == by_name[g["name"].removesuffix(".no_decay")]["lr"]
    assert sum(len(g["params"]) for g in decayed.param_groups) == sum(len(g["params"]) for g in opt.param_groups)

    # and during training the schedule keeps the ratios: logged lr per group = coef x llm base lr
    out = train(cfg, items=speech_items)
    for line in (out.parent / "log.jsonl").read_text().splitlines()[:2]:
        lr = json.loads(line)["lr"]
        ref = lr["llm.other"]
        assert ref > 0
        for i in (0, 1):
            assert lr[f"llm.layer.{i}"] == pytest.approx(ref * coef[i], rel=1e-12)
        assert lr["adaptor"] == pytest.approx(5 * ref, rel=1e-12)


def test_layer_lr_rejects_wrong_layer_count(tmp_path, make_config):
    path = tmp_path / "coef.json"
    path.write_text(json.dumps({"lambda": 0.4, "source": "x", "coefficients": {"0": 1.0, "1": 0.8, "2": 0.6}}))
    cfg = make_config("layer_lr", {"coefficients": str(path)})
    with pytest.raises(ValueError, match=r"layers \[0, 1, 2\] but the LLM has layers \[0, 1\]"):
        setup_method(build_model(cfg), "layer_lr", cfg.method.options)


def test_lora_wraps_seven_projections_and_keeps_base_bitwise(make_config, speech_items):
    from peft.tuners.lora import LoraLayer

    cfg = make_config("lora")
    model = build_model(cfg)
    base_before = _snapshot(model.llm)
    adaptor_before = _snapshot(model.adaptor)
    out = train(cfg, model=model, items=speech_items)

    wrapped = [(n, m) for n, m in model.llm.named_modules() if isinstance(m, LoraLayer)]
    n_layers = model.llm.config.num_hidden_layers
    assert len(wrapped) == 7 * n_layers
    kinds = sorted((parse_param_name(n + ".weight").layer, n.rsplit(".", 1)[-1]) for n, _ in wrapped)
    assert kinds == sorted((i, m) for i in range(n_layers) for m in MODULES)
    assert all(m.r["default"] == 8 and m.scaling["default"] == 2.0 for _, m in wrapped)  # alpha = 2r

    after = dict(model.llm.named_parameters())
    lora = {n: p for n, p in after.items() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in lora.items() if "lora_B" in n)
    base_names = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in after.items() if "lora_" not in n}
    assert set(base_names) == set(base_before)
    assert all(torch.equal(base_before[n], p) for n, p in base_names.items())
    assert not all(torch.equal(adaptor_before[n], p) for n, p in model.adaptor.named_parameters())

    reloaded = SpeechLLM.from_pretrained(out)
    assert json.loads((out / "omnishift_config.json").read_text())["llm_format"] == "peft"
    for n, p in reloaded.llm.named_parameters():
        assert torch.equal(p, after[n]), n


def test_frozen_leaves_llm_bitwise(make_config, speech_items):
    cfg = make_config("frozen")
    model = build_model(cfg)
    llm_before, adaptor_before = _snapshot(model.llm), _snapshot(model.adaptor)
    train(cfg, model=model, items=speech_items)
    assert all(torch.equal(llm_before[n], p) for n, p in model.llm.named_parameters())
    assert all(not torch.equal(adaptor_before[n], p) for n, p in model.adaptor.named_parameters())


@pytest.mark.parametrize("method", ["region_freeze", "full"])
def test_region_freeze_fixes_exactly_the_masked_entries(tmp_path, make_config, speech_items, method):
    probe = build_model(make_config())
    _fake_text_scores(probe, tmp_path / "scores")
    fraction = 0.05
    idx = top_fraction_indices(tmp_path / "scores", fraction, {n: p.shape for n, p in probe.llm.named_parameters()})
    total = sum(p.numel() for p in probe.llm.parameters())
    assert sum(i.numel() for i in idx.values()) == round(fraction * total)

    options = {"scores": str(tmp_path / "scores"), "fraction": fraction} if method == "region_freeze" else {}
    # weight decay shrinks every entry each step, so only an exact restore keeps masked ones fixed
    cfg = make_config(method, options, optim={"weight_decay": 0.1})
    model = build_model(cfg)
    before = _snapshot(model.llm)
    train(cfg, model=model, items=speech_items)
    masked_same = moved = others = 0
    for n, p in model.llm.named_parameters():
        mask = torch.zeros(p.numel(), dtype=torch.bool)
        if n in idx:
            mask[idx[n]] = True
        same = p.detach().reshape(-1).view(torch.int32) == before[n].reshape(-1).view(torch.int32)  # bitwise
        masked_same += int((same & mask).sum())
        moved += int((~same & ~mask).sum())
        others += int((~mask).sum())
    n_masked = round(fraction * total)
    if method == "region_freeze":
        assert masked_same == n_masked  # every masked entry bitwise unchanged
    else:
        assert masked_same < n_masked // 10  # the same entries do move under plain Full-FT
    assert moved > 0.99 * others  # everything else trains


def test_text_control_trains_the_llm_on_the_same_instructions_as_text(tmp_path, make_config):
    import json

    from omnishift.train.trainer import build_items

    rows = [{"id": f"r{i}", "text": f"say the word number {i}", "response": f"word {i}"} for i in range(4)]
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_config("text_control", data={"source": str(src), "modality": "speech", "audio_dir": str(tmp_path / "a")})
    model = build_model(cfg)
    items = build_items(cfg, model.tokenizer)
    assert [it.get("audio") for it in items] == [None] * 4 and "say the word number 0" in items[0]["prompt"]
    llm_before, adaptor_before = _snapshot(model.llm), _snapshot(model.adaptor)
    train(cfg, model=model)
    assert all(torch.equal(adaptor_before[n], p) for n, p in model.adaptor.named_parameters())  # never in the path
    assert all(not torch.equal(llm_before[n], p) for n, p in model.llm.named_parameters())
    assert not (tmp_path / "a").exists()  # nothing was synthesized for it
