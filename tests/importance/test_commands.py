"""The importance CLI on tiny saved models: change heatmaps from a full and a LoRA checkpoint."""

from __future__ import annotations

import pytest
import torch
from tiny_models import save_tiny_parts

from omnishift.cli import main
from omnishift.models.speech_llm import SpeechLLM


def test_change_command_full_and_lora(tmp_path, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    cfg = save_tiny_parts(tmp_path, tiny_tokenizer, adaptor_hidden=8)
    full = SpeechLLM.from_config(cfg)
    with torch.no_grad():
        full.llm.model.layers[1].mlp.up_proj.weight[3, :] += 1.0  # a planted row change
    full.save_pretrained(tmp_path / "full")
    lora = SpeechLLM.from_config(cfg)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora.llm = get_peft_model(lora.llm, LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False))
    lora.save_pretrained(tmp_path / "lora")
    out = tmp_path / "fig4.png"
    assert main(["importance", "change", f"full={tmp_path / 'full'}", f"lora={tmp_path / 'lora'}", "--out", str(out)]) == 0
    import json

    from matplotlib.image import imread

    summary = json.loads(out.with_suffix(".json").read_text())
    up = summary["full"]["model.layers.1.mlp.up_proj.weight"]
    assert up["top_row"] == 3 and up["max_abs"] == pytest.approx(1.0, abs=1e-6)  # the planted change, found
    others = [v["max_abs"] for n, v in summary["full"].items() if n != "model.layers.1.mlp.up_proj.weight"]
    assert len(others) == 6 and max(others) == 0.0  # nothing else changed in the full model
    assert len(summary["lora"]) == 7 and min(v["max_abs"] for v in summary["lora"].values()) > 0
    img = imread(out)
    assert img.ndim == 3 and img.shape[1] > img.shape[0] and img[..., :3].std() > 0.05  # a drawn, wide grid


def test_build_items_hf_source_gets_an_audio_folder(tmp_path, monkeypatch):
    """hf: sources decode audio to WAVs: the item builder (training, importance) passes a folder."""
    import omnishift.data.sources as sources
    from omnishift.data.manifest import Example
    from omnishift.data.items import build_items

    seen = {}

    def fake(name, split, audio_dir, limit=None, **kw):
        seen.update(name=name, split=split, audio_dir=audio_dir)
        return [Example(id="x1", text="question?", response="answer.")]

    monkeypatch.setattr(sources, "load_hf_dataset", fake)
    items, info = build_items("hf:GSQA/spoken-alpaca-gpt4:train", "text", audio_dir=str(tmp_path))
    assert seen == {"name": "GSQA/spoken-alpaca-gpt4", "split": "train", "audio_dir": tmp_path / "hf"}
    assert items[0]["response"] == "answer." and info["items"] == 1
    with pytest.raises(ValueError, match="data.audio_dir"):
        build_items("hf:GSQA/spoken-alpaca-gpt4", "text")
