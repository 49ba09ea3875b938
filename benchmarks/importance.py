"""Importance benchmarks; prints one JSON object.

1. ``pass``: an importance pass (``dataset`` and ``batch`` mode) vs plain forward+backward over
   the same batches on the default model: time ratio (target <= 1.10) and peak RSS ratio (target
   <= 1.10 in ``dataset`` mode). Each variant runs in its own subprocess so ru_maxrss is its own.
   Two baselines: ``plain`` frees the gradients between batches (``set_to_none=True``);
   ``plain_keep_grads`` zeroes them in place, as an accumulation loop holds them, which is what
   ``dataset`` mode must do (it *is* gradient accumulation over the whole set).
2. ``threshold``: the exact global k-th largest (3% top) over 10^9 synthetic fp32 scores streamed
   from a 4 GB safetensors file written piecewise (never held in memory at once): time and peak
   RSS, and a streamed check that the value really is the k-th largest (count(>v) < k <= count(>=v)).

Usage: python benchmarks/importance.py [--part pass|threshold|all] [--scores 1e9] [--batches 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

QUESTIONS = [
    ("Name three primary colors.", "Red, yellow and blue are the three primary colors."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Give one tip for staying healthy.", "Drink enough water and get regular exercise every day."),
    ("Why do leaves change color in autumn?", "Chlorophyll breaks down, revealing yellow and orange pigments."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Translate 'good morning' into Spanish.", "Good morning in Spanish is 'buenos días'."),
    ("How many continents are there?", "There are seven continents on Earth."),
    ("Suggest a name for a pet goldfish.", "Bubbles is a cheerful name for a goldfish."),
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(variant: str, batches: int, batch_size: int) -> dict:
    """One measurement in this process: plain fwd+bwd, or an importance pass."""
    from omnishift.importance.estimator import ImportanceConfig, compute_importance, response_nll_sum
    from omnishift.models.processor import t2t_prompt
    from omnishift.models.speech_llm import SpeechLLM

    torch.manual_seed(0)
    model = SpeechLLM.from_config()
    items = [{"prompt": t2t_prompt(q), "response": a} for q, a in QUESTIONS]
    items = (items * (batches * batch_size // len(items) + 1))[: batches * batch_size]
    base_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    if variant in ("plain", "plain_keep_grads"):
        model.requires_grad_(False)
        model.llm.requires_grad_(True)
        for i in range(0, len(items), batch_size):
            batch = model.processor(items[i:i + batch_size])
            nll, n = response_nll_sum(model({k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
            (nll / n).backward()
            # plain: free the grads between batches (the leanest loop); plain_keep_grads: zero them
            # in place, as a gradient-accumulation training loop holds them across micro-batches.
            model.zero_grad(set_to_none=(variant == "plain"))
    else:
        with tempfile.TemporaryDirectory() as d:
            cfg = ImportanceConfig(mode=variant, batch_size=batch_size, save_every=0)
            # Items are already in a fixed order; fraction 1 keeps them all.
            compute_importance(model, items, cfg, d, progress=False)
    return {"variant": variant, "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
            "rss_after_load_mb": base_rss}


def bench_pass(batches: int, batch_size: int) -> dict:
    out = {}
    for variant in ("plain", "plain_keep_grads", "dataset", "batch"):
        r = subprocess.run([sys.executable, __file__, "--variant", variant, "--batches", str(batches),
                            "--batch-size", str(batch_size)], capture_output=True, text=True, check=True)
        out[variant] = json.loads(r.stdout.strip().splitlines()[-1])
    plain = out["plain"]
    return {
        "batches": batches, "batch_size": batch_size, "runs": out,
        "time_ratio_dataset": out["dataset"]["seconds"] / plain["seconds"],
        "time_ratio_batch": out["batch"]["seconds"] / plain["seconds"],
        "peak_rss_ratio_dataset": out["dataset"]["peak_rss_mb"] / plain["peak_rss_mb"],
        "peak_rss_ratio_batch": out["batch"]["peak_rss_mb"] / plain["peak_rss_mb"],
        "peak_rss_ratio_dataset_vs_keep_grads": out["dataset"]["peak_rss_mb"] / out["plain_keep_grads"]["peak_rss_mb"],
        "time_ratio_dataset_vs_keep_grads": out["dataset"]["seconds"] / out["plain_keep_grads"]["seconds"],
    }


def write_big_safetensors(path: Path, total: int, chunk: int, seed: int = 0) -> list[str]:
    """Write ``total`` fp32 scores as ``total/chunk`` tensors, one piece at a time."""
    names = [f"t{i:05d}" for i in range((total + chunk - 1) // chunk)]
    sizes = [min(chunk, total - i * chunk) for i in range(len(names))]
    header, offset = {}, 0
    for n, s in zip(names, sizes):
        header[n] = {"dtype": "F32", "shape": [s], "data_offsets": [offset, offset + 4 * s]}
        offset += 4 * s
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for s in sizes:  # heavy-tailed, with exact ties (rounded) and zeros, like real scores
            x = (torch.randn(s, generator=g).abs() ** 3 * 1e-4).mul(1e6).round().div(1e6)
            f.write(x.numpy().tobytes())
    return names


def bench_threshold(total: int, fraction: float = 0.03) -> dict:
    from omnishift.importance.threshold import stream_safetensors

    with tempfile.TemporaryDirectory(dir=os.environ.get("OMNISHIFT_BENCH_TMP")) as d:
        path = Path(d) / "scores.safetensors"
        t0 = time.perf_counter()
        write_big_safetensors(path, total, chunk=10_000_000)
        write_s = time.perf_counter() - t0
        r = subprocess.run([sys.executable, __file__, "--variant", "threshold", "--file", str(path),
                            "--k", str(int(fraction * total))], capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        # Independent check, streamed: v is the k-th largest iff count(>v) < k <= count(>=v).
        src = stream_safetensors(path)
        greater = sum(int((t > res["value"]).sum()) for t in src())
        geq = sum(int((t >= res["value"]).sum()) for t in src())
        k = int(fraction * total)
        return {"scores": total, "file_gb": path.stat().st_size / 1e9, "write_seconds": write_s, **res,
                "verified": greater < k <= geq, "fp32_concat_gb": total * 4 / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["all", "pass", "threshold"])
    ap.add_argument("--variant")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--scores", type=float, default=1e9)
    ap.add_argument("--file")
    ap.add_argument("--k", type=int)
    a = ap.parse_args()
    if a.variant == "threshold":
        from omnishift.importance.threshold import kth_largest, stream_safetensors

        t0 = time.perf_counter()
        value, greater = kth_largest(stream_safetensors(a.file), a.k)
        print(json.dumps({"value": value, "count_greater": greater, "seconds": time.perf_counter() - t0,
                          "peak_rss_mb": _peak_rss_mb()}))
        return
    if a.variant:
        print(json.dumps(run_variant(a.variant, a.batches, a.batch_size)))
        return
    result = {}
    if a.part in ("all", "pass"):
        result["importance_pass"] = bench_pass(a.batches, a.batch_size)
    if a.part in ("all", "threshold"):
        result["global_threshold"] = bench_threshold(int(a.scores))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
