"""Generation throughput for QA evaluation; prints one JSON object.

Questions/s answering LLaMA-Omni-style T2T prompts with the default model through
:func:`omnishift.evaluate.qa.evaluate`, on the same questions and the same greedy settings, in one
run (so machine load hits every variant alike):

* ``continuous``: continuous batching with ``--batch`` slots (``SpeechLLM.generate_stream``: a
  finished answer's slot takes the next question), what ``evaluate`` does by default;
* ``static``: static batches of ``--batch`` through ``SpeechLLM.generate`` (rows leave the batch
  when they finish, but a batch lasts as long as its longest answer), the previous loop;
* ``single``: one question at a time (static, batch 1);
* ``hf_generate`` (``--hf``): static batches through ``transformers``' ``generate`` (every row runs
  until the longest answer ends), the implementation before that.

Checks that all outputs are identical. Questions come from ``../shared/data`` LLaMA Questions.

Usage: python benchmarks/eval.py [--n 32] [--batch 16] [--max-new-tokens 64] [--threads 2] [--hf]
"""

from __future__ import annotations

import json
import tempfile
import time
import types
from pathlib import Path


def hf_generate(self, batch, max_new_tokens=64):
    """The original ``SpeechLLM.generate``: transformers' greedy ``generate`` on the whole batch."""
    out = self.llm.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
    out = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def main() -> None:
    import os

    from qa_setup import load_setup, qa_parser

    from omnishift.evaluate.qa import EvalSettings, evaluate

    ap = qa_parser(__doc__.splitlines()[0])
    ap.add_argument("--hf", action="store_true", help="also time transformers' generate (static batches)")
    a = ap.parse_args()
    model, items = load_setup(a, "t2t")
    runs = [("continuous", a.batch, True), ("single", 1, False), ("static", a.batch, False)]
    if a.hf:
        runs.append(("hf_generate", a.batch, False))
    res = {}
    load = {"loadavg_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as d:
        for name, bs, continuous in runs:
            m = model
            if name == "hf_generate":
                m = types.SimpleNamespace(processor=model.processor, generate=types.MethodType(hf_generate, model))
            t0 = time.perf_counter()
            evaluate(m, items, Path(d) / name,
                     EvalSettings(batch_size=bs, max_new_tokens=a.max_new_tokens, progress=False, continuous=continuous))
            res[name] = {"seconds": time.perf_counter() - t0,
                         "outputs": {json.loads(x)["id"]: json.loads(x)["output"]
                                     for x in (Path(d) / name / "items.jsonl").read_text().splitlines()}}
    load["loadavg_end"] = round(os.getloadavg()[0], 2)
    lengths = [len(model.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in res["single"]["outputs"].values()]
    print(json.dumps({
        "questions": a.n, "batch": a.batch, "max_new_tokens": a.max_new_tokens, "threads": a.threads, **load,
        "answer_tokens_mean": sum(lengths) / len(lengths), "answer_tokens_max": max(lengths),
        **{f"questions_per_s_{k}": round(a.n / v["seconds"], 3) for k, v in res.items()},
        **{f"speedup_{k}_over_single": round(res["single"]["seconds"] / v["seconds"], 2)
           for k, v in res.items() if k != "single"},
        "identical_outputs": all(v["outputs"] == res["single"]["outputs"] for v in res.values()),
    }, indent=2))


if __name__ == "__main__":
    main()
