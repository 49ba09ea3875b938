"""Cost of one forgetting-curve point, by part and by batching; prints one JSON object.

A point of :class:`omnishift.evaluate.drift.DriftProbe` on a QA set is teacher-forced KL / ΔNLL of
the start's answers (two forward passes per batch: model and start) plus the model's own greedy
answers (T2T and flips). Both parts are timed here on the first ``--n`` LLaMA Questions asked as
the evaluate stage asks them, the generation at several continuous-batching slot counts and the
teacher-forced pass at several batch sizes, in one run so machine load hits every variant alike.
The model is a copy of the default base with its LLM weights nudged (so KL is not trivially 0);
outputs must be identical across slot counts, and KL across batch sizes.

Usage: python benchmarks/drift_probe.py [--n 300] [--slots 16,32,64] [--batches 8,16] [--threads 2]
"""

from __future__ import annotations

import copy
import json
import os
import time


def main() -> None:
    import torch
    from qa_setup import load_setup, qa_parser

    from omnishift.evaluate.drift import greedy_answers, teacher_forced

    ap = qa_parser(__doc__.splitlines()[0])
    ap.set_defaults(n=300)
    ap.add_argument("--slots", default="16,32,64", help="continuous-batching slot counts to time")
    ap.add_argument("--batches", default="8,16", help="teacher-forced batch sizes to time")
    a = ap.parse_args()
    base, items = load_setup(a, "t2t")
    base.eval()
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.llm.parameters():
            p.add_(1e-3 * p.abs().mean() * torch.randn(p.shape, generator=g))
    prompts = [it["prompt"] for it in items]
    load = {"loadavg_start": round(os.getloadavg()[0], 2)}
    t0 = time.perf_counter()
    answers = greedy_answers(base, prompts, a.max_new_tokens, slots=16)
    res = {"start_answers_s": round(time.perf_counter() - t0, 1)}
    gen = {}
    for s in [int(x) for x in a.slots.split(",")]:
        t0 = time.perf_counter()
        gen[s] = greedy_answers(model, prompts, a.max_new_tokens, slots=s)
        res[f"generate_slots{s}_s"] = round(time.perf_counter() - t0, 1)
    tf = {}
    for b in [int(x) for x in a.batches.split(",")]:
        t0 = time.perf_counter()
        tf[b] = teacher_forced(model, base, prompts, answers, batch_size=b)
        res[f"teacher_forced_batch{b}_s"] = round(time.perf_counter() - t0, 1)
    load["loadavg_end"] = round(os.getloadavg()[0], 2)
    first_gen, first_tf = next(iter(gen.values())), next(iter(tf.values()))
    kl = [[r.get("kl", 0.0) for r in v] for v in tf.values()]
    print(json.dumps({
        "questions": a.n, "max_new_tokens": a.max_new_tokens, "threads": a.threads, **load, **res,
        "answer_tokens_mean": round(sum(r["tokens"] for r in first_tf) / len(first_tf), 1),
        "identical_answers_across_slots": all(v == first_gen for v in gen.values()),
        "max_kl_difference_across_batches": max(abs(x - y) for k in kl for x, y in zip(k, kl[0])),
        "mean_kl": round(sum(kl[0]) / len(kl[0]), 5),
    }, indent=2))


if __name__ == "__main__":
    main()
