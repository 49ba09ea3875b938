"""bfloat16 against float32 matrix products at the alignment adaptor's shapes, on this machine's CPU.

Run: ``python benchmarks/bf16_matmul.py [--rows 64] [--repeats 3]``. Prints one JSON object: the CPU
model, PyTorch's CPU capability, whether :func:`omnishift.models.precision.native_bf16` finds native
bfloat16, and for each shape the mean seconds of one product in float32 and in bfloat16 and their
ratio ``bf16_over_fp32``, measured in this one run (one warm-up call each, not counted).

Why: ``bf16_logits`` / ``bf16_adaptor`` were measured 1.5-1.9x faster on a CPU with AVX512-BF16
(``docs/benchmarks.md``); on an AVX2-only CPU PyTorch falls back to a slow bfloat16 path. This
benchmark puts a number on that for the shapes an alignment step multiplies: the MLP's first linear
(``k * d_enc`` = 5 x 384 -> 2,048), its second (2,048 -> 576), and the CTC scoring of the adaptor's
outputs against the sampled vocabulary (576 -> 8,192 negatives + ~500 batch targets). ``--rows`` is the
number of adaptor output frames (a training batch has ~1,000); the default keeps the slow path short.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SHAPES = {"mlp_linear1": (1920, 2048), "mlp_linear2": (2048, 576), "ctc_scores": (576, 8704)}


def seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """Mean wall seconds of ``a @ b`` over ``repeats`` calls after one warm-up call."""
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - t) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from omnishift.models.precision import cpu_description

    g = torch.Generator().manual_seed(0)
    out = {**cpu_description(), "threads": torch.get_num_threads(), "rows": args.rows, "shapes": {}}
    for name, (d_in, d_out) in SHAPES.items():
        a = torch.randn(args.rows, d_in, generator=g)  # rows, d_in
        b = torch.randn(d_in, d_out, generator=g)      # d_in, d_out
        fp32 = seconds(a, b, args.repeats)
        bf16 = seconds(a.bfloat16(), b.bfloat16(), args.repeats)
        out["shapes"][name] = {"shape": f"{args.rows}x{d_in} @ {d_in}x{d_out}", "fp32_s": round(fp32, 5),
                               "bf16_s": round(bf16, 5), "bf16_over_fp32": round(bf16 / fp32, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
