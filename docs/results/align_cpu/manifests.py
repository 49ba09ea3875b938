"""The LLaMA Questions manifests that the scripts beside this file and the README's commands read.

python docs/results/align_cpu/manifests.py

Writes (atomically, from ../shared/data and committed results only, so a fresh checkout can rebuild them):
- ``runs/align/bench/llama_questions.jsonl``: the 300 real recordings with their reference answers,
  in the benchmark's own order (as an ``omnishift run`` data stage writes it);
- ``runs/align/listen/llamaq_self.jsonl``: the same rows with ``response`` = the base LLM's own T2T
  answer (``eval/base_t2t/items.jsonl``), so the listening gain asks how much the item's own
  recording helps predict what the LLM answers from the text.
"""
import json
from pathlib import Path

from omnishift.data.manifest import write_manifest
from omnishift.data.sources import load_source

BENCH = "runs/align/bench/llama_questions.jsonl"
SELF = "runs/align/listen/llamaq_self.jsonl"
BASE_T2T = Path(__file__).parent / "eval/base_t2t/items.jsonl"


def write_all() -> tuple[str, str]:
    """Write both manifests; returns their paths."""
    examples = load_source("llama_questions")
    answers = {r["id"]: r["output"] for r in map(json.loads, BASE_T2T.read_text().splitlines())}
    missing = [e.id for e in examples if e.id not in answers]
    if missing:
        raise ValueError(f"{BASE_T2T} has no base answer for {missing[:3]} ({len(missing)} items): rerun "
                         "`omnishift eval base --benchmark llama_questions --mode t2t --out` into it")
    write_manifest(BENCH, examples)
    for e in examples:
        e.response = answers[e.id]
    write_manifest(SELF, examples)
    return BENCH, SELF


if __name__ == "__main__":
    print(*write_all())
