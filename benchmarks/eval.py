"""Generation throughput for QA evaluation; prints one JSON object.

Questions/s answering LLaMA-Omni-style T2T prompts with the default model, batched (left padding,
batch 16) vs one at a time, on the same questions and the same greedy settings; also checks the
outputs are identical. Questions come from ``../shared/data`` LLaMA Questions when present.

Usage: python benchmarks/eval.py [--n 32] [--batch 16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    from omnishift.data.sources import load_llama_questions
    from omnishift.evaluate.qa import build_eval_items, evaluate
    from omnishift.models.speech_llm import load_speech_llm

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    a = ap.parse_args()
    model = load_speech_llm()
    items = build_eval_items(load_llama_questions(limit=a.n), "t2t")
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for bs in (a.batch, 1):
            t0 = time.perf_counter()
            evaluate(model, items, Path(d) / f"b{bs}", batch_size=bs, max_new_tokens=a.max_new_tokens, progress=False)
            res[bs] = {"seconds": time.perf_counter() - t0,
                       "outputs": {json.loads(x)["id"]: json.loads(x)["output"]
                                   for x in (Path(d) / f"b{bs}" / "items.jsonl").read_text().splitlines()}}
    print(json.dumps({
        "questions": a.n, "max_new_tokens": a.max_new_tokens,
        "questions_per_s_batched": a.n / res[a.batch]["seconds"], "questions_per_s_single": a.n / res[1]["seconds"],
        "speedup_batched_over_single": res[1]["seconds"] / res[a.batch]["seconds"],
        "identical_outputs": res[a.batch]["outputs"] == res[1]["outputs"],
    }, indent=2))


if __name__ == "__main__":
    main()
