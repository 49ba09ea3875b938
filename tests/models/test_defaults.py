"""The embedded default models: prepared offline from the wheels, identical to their sources."""

from __future__ import annotations

import pytest
import torch

from omnishift.models.defaults import (
    DEFAULT_ENCODER, DEFAULT_LLM, load_llm, prepare_default_models, resolve_model, smollm2_gguf_path,
)

pytestmark = pytest.mark.integration


def test_prepared_smollm2_equals_gguf_model():
    from transformers import AutoModelForCausalLM

    info = prepare_default_models([DEFAULT_LLM])[DEFAULT_LLM]
    model, tok = load_llm(DEFAULT_LLM)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    gguf = smollm2_gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        assert (model(ids).logits - ref(ids).logits).abs().max().item() == 0.0
    assert (info["path"]).endswith(DEFAULT_LLM)


def test_prepare_is_idempotent_and_names_pass_through():
    first = prepare_default_models()
    again = prepare_default_models()
    assert all(not v["prepared"] for v in again.values())
    assert {k: v["path"] for k, v in first.items()} == {k: v["path"] for k, v in again.items()}
    assert set(first) == {DEFAULT_LLM, DEFAULT_ENCODER}
    assert resolve_model("meta-llama/Llama-3.2-1B-Instruct") == "meta-llama/Llama-3.2-1B-Instruct"


def test_default_speech_llm_answers_from_text():
    from omnishift.models.speech_llm import SpeechLLM

    m = SpeechLLM.from_config()
    answer = m.answer(["What is the capital of France?"], max_new_tokens=16)[0]
    assert "paris" in answer.lower()
