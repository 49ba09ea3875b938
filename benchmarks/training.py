"""Training throughput on the default model; prints one JSON object.

- ``trim`` vs ``pad30``: training examples/s when every clip keeps only its real frames (+0.2 s)
  versus LLaMA-Omni's 30 s padding (300 speech embeddings per clip).
- feature cache: optimizer-step time with the encoder outputs read from the cache (warm) versus
  encoding every step.

Each variant trains a fresh default speech LLM (``full`` method, fp32, CPU) for ``--steps``
optimizer steps of ``--batch`` spoken instructions synthesized with eSpeak NG at run time; the
model load is outside the timed region; the first step is dropped as warm-up.

Usage: python benchmarks/training.py [--steps 4] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

QUESTIONS = [
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("Name a mammal that can fly.", "The bat is a mammal that can fly."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What gas do plants absorb?", "Plants absorb carbon dioxide from the air."),
]


def run(policy: str, cache_dir: str | None, steps: int, batch: int, work: Path) -> dict:
    from omnishift.data.synth import synthesize
    from omnishift.models.processor import s2t_prompt
    from omnishift.models.speech_llm import SpeechLLM, SpeechLLMConfig
    from omnishift.train.config import config_from_dict
    from omnishift.train.trainer import train

    items = [{"id": f"q{i}", "prompt": s2t_prompt(), "audio": synthesize(q), "response": a}
             for i, (q, a) in enumerate(QUESTIONS)]
    items = (items * (steps * batch // len(items) + 1))[: steps * batch]
    model = SpeechLLM.from_config(SpeechLLMConfig(frame_policy=policy))
    cfg = config_from_dict({
        "model": {"frame_policy": policy}, "method": {"name": "full", "options": {}},
        "data": {"feature_cache": cache_dir, "max_response_tokens": 64},
        "loop": {"epochs": 1, "max_steps": steps, "batch_size": batch, "grad_accum": 1, "progress": False},
        "checkpoint": {"save_every": 0},
        "out_dir": str(work / f"{policy}_{'cache' if cache_dir else 'nocache'}_{time.time_ns()}"),
    }, "benchmark")
    t0 = time.perf_counter()
    out = train(cfg, model=model, items=items)
    wall = time.perf_counter() - t0
    records = [json.loads(x) for x in (out.parent / "log.jsonl").read_text().splitlines()]
    step_s = [r["tokens"] / r["tokens_per_s"] for r in records[1:]]  # drop the warm-up step
    mean = sum(step_s) / len(step_s)
    return {"policy": policy, "cache": bool(cache_dir), "wall_s": wall, "step_s": mean,
            "examples_per_s": batch / mean, "tokens_per_step": sum(r["tokens"] for r in records[1:]) / len(step_s)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        trim = run("trim", None, a.steps, a.batch, work)
        pad = run("pad30", None, a.steps, a.batch, work)
        cache = str(work / "features")
        run("trim", cache, 2, a.batch, work)  # fill the cache
        cached = run("trim", cache, a.steps, a.batch, work)
    print(json.dumps({
        "runs": [trim, pad, cached],
        "examples_per_s_trim_over_pad30": trim["examples_per_s"] / pad["examples_per_s"],
        "step_time_cache_over_no_cache": cached["step_s"] / trim["step_s"],
    }, indent=2))


if __name__ == "__main__":
    main()
