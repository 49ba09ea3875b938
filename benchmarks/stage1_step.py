"""Stage-1 training throughput through the continuous speech path, against this CPU's measured peak.

Run: ``python benchmarks/stage1_step.py FOLDER [--steps 4] [--items 16]``, e.g. ``runs/align/soft_untrained``
(an aligned adaptor read as ``ctc_soft``). Prints one JSON object.

What it measures, in this one run on the same spoken instructions (``alpaca_alpagasus_random9k``, spoken
by eSpeak NG into a temporary folder, encoder outputs from a feature cache, responses cut at 64 tokens,
micro-batches of 4, 2 per step: the settings of ``experiments/forgetting_1k``):

* ``peak``: FLOP/s of one 2,048 x 2,048 x 2,048 product in float32 and in bfloat16 (best of 5), the
  practical peak of this CPU's matrix units at the benchmark's thread count;
* per variant (method x ``loop.precision``): seconds a step (the first step is warm-up and dropped),
  LLM tokens/s (every position the LLM reads, as ``log.jsonl`` counts them), FLOPs a token counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` over one forward and backward, the achieved FLOP/s and
  its share of the peak of the variant's precision (model FLOPs utilisation, ``mfu``);
* ``projection``: minutes per method and for the five trained rows of the study (frozen, text control,
  Full, Layer-LR, LoRA) at the issue's size of Stage 1 (``--project-steps`` optimizer steps), from the
  measured step times. Derived, not run.

Why: a bigger Stage 1 is bounded by this machine's arithmetic; this says how far the step is from the
hardware, where bfloat16 pays, and whether a study of that size fits a wall-clock budget.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = [("full", "fp32"), ("full", "bf16"), ("lora", "bf16"), ("layer_lr", "bf16")]
CONFIGS = {"full": "configs/default/full.yaml", "lora": "configs/default/lora.yaml",
           "layer_lr": "configs/default/layer_lr.yaml"}
LAYER_LR = "method.options.coefficients=experiments/importance_smollm2/layer_lr_lambda0.4.json"


def peak_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of one ``n x n @ n x n`` product (2 n^3 FLOPs) over ``repeats`` calls after a warm-up."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def _config(folder: str, method: str, precision: str, steps: int, items: int, work: Path):
    from omnishift.train.config import load_config

    extra = [LAYER_LR] if method == "layer_lr" else []
    return load_config(CONFIGS[method], [
        f"model={folder}", "data.source=instructions:alpaca_alpagasus_random9k", f"data.limit={items}",
        f"data.audio_dir={work / 'audio'}", f"data.feature_cache={work / 'features'}", "data.max_response_tokens=64",
        f"loop.max_steps={steps}",
        "loop.batch_size=4", "loop.grad_accum=2", "loop.log_every=1", "loop.progress=false", "checkpoint.save_every=0",
        f"loop.precision={precision}", f"out_dir={work / f'{method}_{precision}'}", *extra])


def flops_per_token(model, items: list[dict], precision: str) -> float:
    """Counted FLOPs of one forward and backward of a micro-batch of ``items``, per LLM token."""
    from torch.utils.flop_counter import FlopCounterMode

    from omnishift.train.trainer import autocast_for

    batch = model.processor(items, padding_side="right")
    with FlopCounterMode(display=False) as counter, autocast_for(precision, torch.device("cpu"))():
        model(batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / int(batch["attention_mask"].sum())


def run(folder: str, method: str, precision: str, steps: int, n_items: int, work: Path, peak: dict) -> dict:
    from omnishift.train.trainer import attach_feature_cache, build_items, build_model, train

    cfg = _config(folder, method, precision, steps, n_items, work)
    model = build_model(cfg)
    items = attach_feature_cache(cfg, model, build_items(cfg, model.tokenizer))  # the study's cached encoder
    train(cfg, model=model, items=items)
    log = [json.loads(x) for x in (Path(cfg.out_dir) / "log.jsonl").read_text().splitlines()][1:]  # no warm-up
    step_s = sum(r["tokens"] / r["tokens_per_s"] for r in log) / len(log)
    tokens = sum(r["tokens"] for r in log) / len(log)
    per_token = flops_per_token(model, items[:4], precision)
    achieved = per_token * tokens / step_s
    return {"method": method, "precision": precision, "step_s": round(step_s, 3), "tokens_per_step": round(tokens),
            "tokens_per_s": round(tokens / step_s, 1), "gflop_per_token": round(per_token / 1e9, 3),
            "achieved_gflops": round(achieved / 1e9, 2), "mfu": round(achieved / peak[precision], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="an aligned speech-LLM folder read through a differentiable speech input")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--items", type=int, default=16)
    p.add_argument("--project-steps", type=int, default=508, help="optimizer steps of the projected Stage 1")
    args = p.parse_args()

    from omnishift.models.precision import cpu_description

    peak = {"fp32": peak_flops(torch.float32), "bf16": peak_flops(torch.bfloat16)}
    out = {**cpu_description(), "threads": torch.get_num_threads(), "folder": args.folder,
           "peak_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()}, "runs": []}
    with tempfile.TemporaryDirectory() as d:
        for method, precision in VARIANTS:
            out["runs"].append(run(args.folder, method, precision, args.steps, args.items, Path(d), peak))
    by = {(r["method"], r["precision"]): r for r in out["runs"]}
    out["bf16_speedup_full"] = round(by["full", "fp32"]["step_s"] / by["full", "bf16"]["step_s"], 3)
    minutes = {m: round(args.project_steps * by[m, "bf16"]["step_s"] / 60, 1) for m in ("full", "lora", "layer_lr")}
    # the frozen row trains the adaptor only and the text control the LLM only: bounded above by full's step
    minutes["five_trained_rows"] = round(minutes["full"] * 3 + minutes["lora"] + minutes["layer_lr"], 1)
    out["projection"] = {"optimizer_steps": args.project_steps, "bf16_minutes": minutes}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
