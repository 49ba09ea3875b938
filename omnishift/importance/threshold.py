"""Exact global k-th largest score over many tensors, streamed, without concatenating or sorting.

Deactivating the top 3% of an 8B model's parameters needs the global 3% threshold over 8·10⁹
scores. Concatenating them (32 GB in fp32) or sorting is out of reach on a small machine, so we
use radix selection on the scores' bit patterns: for non-negative IEEE floats, the integer view of
the bits orders exactly like the values. Pass 1 histograms the high 16 bits of every tensor
(65,536 counters), which pins the k-th value's high half; pass 2 histograms the low 16 bits of the
elements sharing that high half, which pins the value exactly (ties included). Memory: one tensor
at a time plus two 65,536-bin histograms; bf16 scores finish after pass 1.

Sources are any iterable factory of tensors, so scores can stream from a safetensors file
(:func:`stream_safetensors`) one tensor at a time.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

Source = Callable[[], Iterable[torch.Tensor]]


_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def stream_safetensors(path: str | Path, keys: list[str] | None = None) -> Source:
    """A re-iterable source reading one tensor at a time from a safetensors file.

    The file is read with plain ``readinto`` rather than memory-mapped: a mapping keeps every
    page it touched resident, so peak memory would grow with the file (4 GB for 10^9 fp32
    scores) instead of staying at one tensor.
    """
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    start = 8 + n
    names = list(header) if keys is None else keys
    missing = [k for k in names if k not in header]
    if missing:
        raise KeyError(f"{path}: no tensor named {missing[0]!r}")

    def gen() -> Iterator[torch.Tensor]:
        with open(path, "rb", buffering=0) as f:
            for k in names:
                info = header[k]
                if info["dtype"] not in _DTYPES:
                    raise ValueError(f"{path}: tensor {k} has dtype {info['dtype']}; scores must be F32/BF16/F16")
                a, b = info["data_offsets"]
                if a == b:
                    yield torch.empty(info["shape"], dtype=_DTYPES[info["dtype"]])
                    continue
                buf = bytearray(b - a)
                f.seek(start + a)
                f.readinto(buf)
                yield torch.frombuffer(buf, dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])

    return gen


def _as_bits(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Order-preserving unsigned bit view (as int64) of a non-negative float tensor, and its width."""
    t = t.detach().reshape(-1).abs()  # -0.0 has the sign bit set; abs() maps it to +0.0
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        return t.view(torch.int16).to(torch.int64) & 0xFFFF, 16
    if t.dtype != torch.float32:
        t = t.float()
    return t.view(torch.int32).to(torch.int64) & 0xFFFFFFFF, 32


def _check(t: torch.Tensor) -> None:
    if torch.isnan(t).any() or (t < 0).any():
        raise ValueError("scores must be non-negative and free of NaN (importance scores are |g·θ|)")


def kth_largest(source: Source, k: int) -> tuple[float, int]:
    """The exact k-th largest value over all tensors of ``source`` (1 = the maximum).

    Args:
        source: zero-argument callable returning an iterable of tensors (called up to 2 times).
        k: rank from the top, 1 <= k <= total count.

    Returns:
        ``(value, count_greater)``: the value, and how many elements are strictly greater (so
        ``k - count_greater`` of the elements equal to it belong to the top k).
    """
    hist_hi = torch.zeros(1 << 16, dtype=torch.int64)
    width, total = None, 0
    for t in source():
        _check(t)
        bits, w = _as_bits(t)
        if width is None:
            width = w
        elif w != width:
            raise ValueError("all score tensors must share one dtype width (fp32, or bf16/fp16)")
        shift = width - 16
        hist_hi += torch.bincount(bits >> shift, minlength=1 << 16)
        total += bits.numel()
    if not 1 <= k <= total:
        raise ValueError(f"k={k} outside 1..{total}")
    hi, above = _locate(hist_hi, k)
    if width == 16:
        return _bits_to_float(hi, width), above
    hist_lo = torch.zeros(1 << 16, dtype=torch.int64)
    for t in source():
        bits, _ = _as_bits(t)
        sel = bits[(bits >> 16) == hi]
        if sel.numel():
            hist_lo += torch.bincount(sel & 0xFFFF, minlength=1 << 16)
    lo, above_lo = _locate(hist_lo, k - above)
    return _bits_to_float((hi << 16) | lo, width), above + above_lo


def _locate(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th largest element, and the count in higher bins."""
    from_top = hist.flip(0).cumsum(0)  # from_top[j]: count in bins >= 65535 - j
    j = int(torch.searchsorted(from_top, torch.tensor(k)))
    b = (1 << 16) - 1 - j
    above = int(from_top[j - 1]) if j > 0 else 0
    return b, above


def _bits_to_float(bits: int, width: int) -> float:
    if width == 16:
        return float(torch.tensor([bits], dtype=torch.int32).to(torch.int16).view(torch.bfloat16)[0])
    return float(torch.tensor([bits if bits < 2**31 else bits - 2**32], dtype=torch.int32).view(torch.float32)[0])


def top_k_masks(source: Source, k: int, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Boolean masks selecting exactly the k largest elements overall.

    Ties at the threshold are broken by position (earlier tensors, then lower flat index), so the
    selection is deterministic and has exactly ``k`` elements.
    """
    if k <= 0:
        for name, t in zip(names, source()):
            yield name, torch.zeros(t.shape, dtype=torch.bool)
        return
    value, greater = kth_largest(source, k)
    ties_left = k - greater
    for name, t in zip(names, source()):
        tv = t.float()  # exact for fp32/bf16/fp16 values; ``value`` came from the same bits
        mask = tv > value
        if ties_left > 0:
            eq = (tv == value).reshape(-1)
            idx = eq.nonzero().flatten()[:ties_left]
            flat = mask.reshape(-1)
            flat[idx] = True
            ties_left -= idx.numel()
        yield name, mask


def bottom_k_masks(source: Source, k: int, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Exactly the k smallest elements: the complement of the top ``total - k``."""
    total = sum(t.numel() for t in source())
    if k >= total:
        for name, t in zip(names, source()):
            yield name, torch.ones(t.shape, dtype=torch.bool)
        return
    for name, mask in top_k_masks(source, total - k, names):
        yield name, ~mask
