"""Shared fixtures. Unit tests use tiny random models (``tiny_models.py``); integration tests
(``-m integration``) use the real default models and ``../shared/data``."""

from __future__ import annotations

import pytest
from tiny_models import make_tiny_speech_llm, make_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture()
def tiny_speech_llm(tiny_tokenizer):
    return make_tiny_speech_llm(tiny_tokenizer)


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data``, or skip with the reason."""
    from omnishift.paths import shared_data_dir

    try:
        return shared_data_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
