"""Fixtures for training tests: tiny base models on disk (so ``final/`` reloads) and tiny items."""

from __future__ import annotations

import pytest
from tiny_models import save_tiny_parts, tone

from omnishift.models.processor import s2t_prompt
from omnishift.models.speech_llm import SpeechLLMConfig
from omnishift.train.config import TrainConfig, config_from_dict


@pytest.fixture(scope="session")
def tiny_model_config(tmp_path_factory, tiny_tokenizer) -> SpeechLLMConfig:
    """SpeechLLMConfig naming a tiny LLM and encoder saved as HF folders."""
    return save_tiny_parts(tmp_path_factory.mktemp("tiny_parts"), tiny_tokenizer, seed=3)


@pytest.fixture(scope="session")
def speech_items() -> list[dict]:
    """Six short spoken 'questions' with text answers."""
    answers = ["yes", "no idea", "paris", "eight legs", "blue", "forty two"]
    return [{"id": f"q{i}", "prompt": s2t_prompt(), "audio": tone(0.3 + 0.1 * i, freq=200 + 40 * i, seed=i),
             "response": a} for i, a in enumerate(answers)]


@pytest.fixture()
def make_config(tmp_path, tiny_model_config):
    """Build a small TrainConfig: ``make_config(method="full", options={}, **section overrides)``."""

    def make(method: str = "full", options: dict | None = None, out: str = "run", **sections) -> TrainConfig:
        data = {
            "model": {**tiny_model_config.__dict__},
            "method": {"name": method, "options": options or {}},
            "optim": {"lr": 1e-3, "adaptor_lr": 1e-3, "warmup_ratio": 0.0},
            "loop": {"epochs": 1, "max_steps": 3, "batch_size": 2, "grad_accum": 1, "seed": 0, "progress": False},
            "checkpoint": {"save_every": 0, "keep_last": 2},
            "out_dir": str(tmp_path / out),
        }
        for sec, vals in sections.items():
            data[sec] = {**data.get(sec, {}), **vals} if isinstance(vals, dict) else vals
        return config_from_dict(data, "test")

    return make
