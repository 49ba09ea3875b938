"""Importance score files: one safetensors of per-parameter scores + aggregates + metadata.

Scores are keyed by ``named_parameters()`` names, so the same key finds a parameter's score, its
deactivation mask, its learning-rate group and its checkpoint tensor. Layer/module parsing lives
here once for every consumer (aggregates, layer-wise LR, distribution plots).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
from typing import NamedTuple
from pathlib import Path

import torch
from safetensors import safe_open

from omnishift.paths import atomic_write_text

SCORES_FILE = "scores.safetensors"
META_FILE = "meta.json"
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ParamKey(NamedTuple):
    """Where a parameter sits: decoder layer index (None outside layers) and module kind."""

    layer: int | None
    module: str


def parse_param_name(name: str) -> ParamKey:
    """Decoder layer and module of a parameter name.

    ``model.layers.3.self_attn.q_proj.weight`` -> (3, "q_proj"); ``model.layers.3.input_layernorm.weight``
    -> (3, "input_layernorm"); ``model.embed_tokens.weight`` -> (None, "embed_tokens"). PEFT prefixes
    (``base_model.model.``) and ``.base_layer`` are ignored.
    """
    m = _LAYER_RE.search(name)
    parts = [p for p in name.split(".") if p not in ("weight", "bias", "base_layer", "default")]
    module = parts[-1] if parts else name
    return ParamKey(int(m.group(1)) if m else None, module)


def save_scores(out_dir: str | Path, scores: dict[str, torch.Tensor], meta: dict, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``scores.safetensors``, ``meta.json``, ``layers.csv`` and ``modules.csv`` into ``out_dir``.

    The safetensors write goes to a temp name and is renamed, like every other write.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{SCORES_FILE}.tmp"
    write_safetensors(tmp, scores, metadata={"omnishift": json.dumps(meta)}, dtype=dtype)
    tmp.replace(out_dir / SCORES_FILE)
    layers, modules = aggregate(scores)
    meta = {**meta, "num_parameters": sum(v.numel() for v in scores.values()),
            "total_importance": float(sum(layers.values()) + sum(v for (l, _), v in modules.items() if l is None))}
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    atomic_write_text(out_dir / "layers.csv", _csv(["layer", "importance", "share"], _layer_rows(layers)))
    atomic_write_text(out_dir / "modules.csv", _csv(["layer", "module", "importance"],
                                                     [("" if l is None else l, m, f"{v:.6e}") for (l, m), v in sorted(modules.items(), key=lambda kv: (-1 if kv[0][0] is None else kv[0][0], kv[0][1]))]))
    return out_dir


_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                      dtype: torch.dtype = torch.float32) -> Path:
    """Write a safetensors file one tensor at a time.

    ``safetensors.torch.save_file`` first turns every tensor into ``bytes`` (a full copy of the
    model's scores at once); this writer streams each tensor's buffer, so saving adds at most one
    converted tensor to peak memory.
    """
    if dtype not in _ST_DTYPES:
        raise ValueError(f"score dtype {dtype} unsupported: use float32, bfloat16 or float16")
    header, offset = {"__metadata__": metadata or {}}, 0
    for name, t in tensors.items():
        n = t.numel() * torch.tensor([], dtype=dtype).element_size()
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            t = t.detach().to("cpu", dtype).contiguous()
            f.write(t.view(torch.uint8).numpy().data if t.numel() else b"")
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def load_scores(path: str | Path, select=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a score folder (or the safetensors file itself); returns ``(scores fp32, meta)``.

    Args:
        select: optional ``names -> names to read``; only those tensors are loaded (a whole 8B
            score file is 32 GB, a figure needs 7 matrices).
    """
    path = Path(path)
    file = path / SCORES_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: run `omnishift importance compute` first")
    with safe_open(str(file), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("omnishift", "{}"))
        names = list(f.keys()) if select is None else select(list(f.keys()))
        scores = {k: f.get_tensor(k).float() for k in names}
    return scores, meta


def aggregate(scores: dict[str, torch.Tensor]) -> tuple[dict[int, float], dict[tuple, float]]:
    """Sum importance per decoder layer and per (layer, module); float64 sums."""
    layers: dict[int, float] = {}
    modules: dict[tuple, float] = {}
    for name, s in scores.items():
        key = parse_param_name(name)
        total = float(s.sum(dtype=torch.float64))
        modules[(key.layer, key.module)] = modules.get((key.layer, key.module), 0.0) + total
        if key.layer is not None:
            layers[key.layer] = layers.get(key.layer, 0.0) + total
    return dict(sorted(layers.items())), modules


def _layer_rows(layers: dict[int, float]):
    total = sum(layers.values()) or 1.0
    return [(i, f"{v:.6e}", f"{v / total:.6f}") for i, v in layers.items()]


def _csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
