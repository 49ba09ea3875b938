"""A speech LLM saved as one folder loads back to identical outputs (full weights and PEFT)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import save_tiny_parts, tone

from omnishift.models.processor import s2t_prompt, t2t_prompt
from omnishift.models.speech_llm import SpeechLLM, SpeechLLMConfig


@pytest.fixture()
def parts_on_disk(tmp_path, tiny_tokenizer):
    """Tiny base LLM and encoder saved as HF folders, so a config can name them by path."""
    return save_tiny_parts(tmp_path, tiny_tokenizer, seed=3)


def _outputs(m: SpeechLLM) -> torch.Tensor:
    items = [{"prompt": s2t_prompt(), "audio": tone(1.2), "response": "ok"},
             {"prompt": t2t_prompt("why?"), "response": "because"}]
    with torch.no_grad():
        return m(m.processor(items)).logits


def _perturb(module: torch.nn.Module) -> None:
    """Make weights differ from a fresh init, so a load that silently re-initialises is caught."""
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))


def test_full_round_trip(tmp_path, parts_on_disk):
    m = SpeechLLM.from_config(parts_on_disk)
    _perturb(m.adaptor)
    _perturb(m.llm)
    m.save_pretrained(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "omnishift_config.json").read_text())
    assert meta["llm_format"] == "full" and (tmp_path / "saved" / "adaptor.safetensors").is_file()
    m2 = SpeechLLM.from_pretrained(tmp_path / "saved")
    assert torch.equal(_outputs(m), _outputs(m2))


def test_peft_round_trip(tmp_path, parts_on_disk):
    from peft import LoraConfig, get_peft_model

    m = SpeechLLM.from_config(parts_on_disk)
    m.llm = get_peft_model(m.llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    _perturb(m.adaptor)
    m.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "llm_adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "saved" / "llm").exists(), "a PEFT save must not duplicate the base weights"
    m2 = SpeechLLM.from_pretrained(tmp_path / "saved")
    assert torch.equal(_outputs(m), _outputs(m2))


def test_unknown_config_key_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown SpeechLLMConfig keys \\['k_frames'\\]"):
        SpeechLLMConfig.from_dict({"k_frames": 4})
    with pytest.raises(FileNotFoundError, match="not a speech-LLM folder"):
        SpeechLLM.from_pretrained(tmp_path)
