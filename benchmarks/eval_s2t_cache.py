"""S2T evaluation with and without the shared encoder feature cache; prints one JSON object.

Every S2T question costs a Whisper encoding of a 30-s window (the encoder always sees 30 s) plus
the answer's decoding. The encoder is frozen in every method, so a study that evaluates several
models on the same recordings can encode each clip once (``evaluate(..., feature_cache=DIR)``,
``evaluate.feature_cache`` in an experiment). Timed in one run, on the same LLaMA Questions
recordings and greedy settings:

* ``raw``: audio in, encoder run per question (no cache);
* ``cold``: the cache is empty, so it is filled first (encode + write), then answers are decoded;
* ``warm``: the cache is full, as for every model after the first.

Checks that all outputs are identical. ``--model`` defaults to the base speech LLM (fresh adaptor).

Usage: python benchmarks/eval_s2t_cache.py [--n 32] [--batch 16] [--max-new-tokens 64] [--threads 2] [--model DIR]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    from qa_setup import load_setup, qa_parser

    from omnishift.evaluate.qa import evaluate

    ap = qa_parser(__doc__.splitlines()[0])
    ap.add_argument("--model", help="speech-LLM folder (default: base models)")
    a = ap.parse_args()
    model, items = load_setup(a, "s2t", a.model)
    res, load = {}, {"loadavg_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as d:
        for name, cache in (("raw", None), ("cold", Path(d) / "cache"), ("warm", Path(d) / "cache")):
            t0 = time.perf_counter()
            evaluate(model, items, Path(d) / name, batch_size=a.batch, max_new_tokens=a.max_new_tokens,
                     progress=False, feature_cache=cache)
            res[name] = {"seconds": time.perf_counter() - t0,
                         "outputs": {json.loads(x)["id"]: json.loads(x)["output"]
                                     for x in (Path(d) / name / "items.jsonl").read_text().splitlines()}}
    load["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps({
        "questions": a.n, "batch": a.batch, "max_new_tokens": a.max_new_tokens, "threads": a.threads,
        "model": a.model or "base (fresh adaptor)", **load,
        **{f"seconds_{k}": round(v["seconds"], 2) for k, v in res.items()},
        **{f"questions_per_s_{k}": round(a.n / v["seconds"], 3) for k, v in res.items()},
        "speedup_warm_over_raw": round(res["raw"]["seconds"] / res["warm"]["seconds"], 2),
        "speedup_cold_over_raw": round(res["raw"]["seconds"] / res["cold"]["seconds"], 2),
        "identical_outputs": all(v["outputs"] == res["raw"]["outputs"] for v in res.values()),
    }, indent=2))


if __name__ == "__main__":
    main()
