"""Tiny random models built in code (no hub, no files) for unit tests that run in seconds."""

from __future__ import annotations

import numpy as np
import torch

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_tokenizer():
    """A real byte-level BPE tokenizer (no merges) with ChatML specials and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML
    return tok


def make_tiny_llm(vocab_size: int, seed: int = 0):
    """A 2-layer Llama (d=32) with tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def make_tiny_encoder(seed: int = 0, n_mels: int = 80):
    """A 1-layer Whisper encoder (d=16) with the real 30 s / 1500-frame geometry."""
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        num_mel_bins=n_mels, d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, max_source_positions=1500,
    )
    return WhisperEncoder(cfg).eval(), WhisperFeatureExtractor(feature_size=n_mels)


def make_tiny_speech_llm(tokenizer=None, seed: int = 0, **config):
    """A :class:`SpeechLLM` from the tiny parts above."""
    from omnishift.models.speech_llm import SpeechLLM, SpeechLLMConfig

    tokenizer = tokenizer or make_tiny_tokenizer()
    llm = make_tiny_llm(len(tokenizer), seed)
    encoder, fe = make_tiny_encoder(seed)
    cfg = SpeechLLMConfig(**{"llm": "tiny", "encoder": "tiny", "adaptor_hidden": 24, **config})
    return SpeechLLM(cfg, llm, tokenizer, encoder, fe)


def tone(seconds: float, sr: int = 16000, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A deterministic tone + noise clip standing in for speech in unit tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def save_tiny_parts(root, tokenizer, **config):
    """Save a tiny LLM (+ tokenizer) and encoder (+ feature extractor) as HF folders under ``root``.

    Returns:
        A :class:`SpeechLLMConfig` naming them by path, so ``from_config``/``from_pretrained`` work.
    """
    from pathlib import Path

    from omnishift.models.speech_llm import SpeechLLMConfig

    root = Path(root)
    make_tiny_llm(len(tokenizer)).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    enc, fe = make_tiny_encoder()
    enc.save_pretrained(root / "encoder")
    fe.save_pretrained(root / "encoder")
    return SpeechLLMConfig(llm=str(root / "llm"), encoder=str(root / "encoder"), **{"adaptor_hidden": 24, **config})
