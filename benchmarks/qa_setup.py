"""What the QA-evaluation benchmarks share: their command line and the model + questions they time.

Both ``eval.py`` (batching strategies) and ``eval_s2t_cache.py`` (encoder feature cache) answer the
first ``--n`` LLaMA Questions with the same greedy settings, so one parser and one loader keep their
numbers comparable.
"""

from __future__ import annotations

import argparse


def qa_parser(description: str) -> argparse.ArgumentParser:
    """``--n --batch --max-new-tokens --threads`` with the benchmarks' defaults."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--n", type=int, default=32, help="LLaMA Questions answered (the first N)")
    ap.add_argument("--batch", type=int, default=16, help="continuous-batching slots / static batch size")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    return ap


def load_setup(args, mode: str, model_dir: str | None = None):
    """Set the thread count; return ``(speech LLM, evaluation items of the first args.n questions)``."""
    import torch

    from omnishift.data.sources import load_llama_questions
    from omnishift.evaluate.qa import build_eval_items
    from omnishift.models.speech_llm import load_speech_llm

    torch.set_num_threads(args.threads)
    return load_speech_llm(model_dir), build_eval_items(load_llama_questions(limit=args.n), mode)
