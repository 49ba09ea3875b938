"""One KD step through the frozen LLM on a differentiable reading: where the time goes, float32 vs bfloat16 LLM.

Run: ``python benchmarks/kd_step.py RECIPE FOLDER [--phase 1] [--steps 8]``, e.g.
``experiments/align_soft/recipe.yaml runs/align/cpu_listen/phases/mlp/final`` (the recipe's sets must exist).
The phase gives the reading (``ctc_soft``), the KD batch size and the answer length. Teacher targets
are made once in float32 for the batches timed; then each step is timed in parts: ``plan`` (the
processor's CTC segmentation, no gradient), ``forward`` (adaptor, posterior-weighted vectors, LLM)
and ``backward`` (to the adaptor). The first 2 steps are warm-up. Prints one JSON object with the
mean seconds per part for ``fp32`` (LLM weights float32) and ``bf16_llm`` (LLM weights bfloat16),
the tokens per second of each (every position the LLM reads, prompt and speech slots included),
and ``speedup``: the ratio of the two step means, measured in this one run on the same batches.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _time_steps(m, batches, opts) -> tuple[dict, int]:
    from omnishift.models.processor import s2t_prompt

    parts, tokens = {"plan": [], "forward": [], "backward": []}, 0
    for j, items in enumerate(batches):
        t0 = time.perf_counter()
        batch = m.processor([{"prompt": s2t_prompt(m.config.placeholder), "encoder_states": it["encoder_states"],
                              "response": it["kd_response"]} for it in items], padding_side="right")
        t1 = time.perf_counter()
        out = m(batch)
        loss = out.logits[:, :-1].float().log_softmax(-1).mean()  # a loss over every position, like KD's
        t2 = time.perf_counter()
        loss.backward()
        m.adaptor.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if j >= 2:
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[k].append(v)
            tokens += int(batch["attention_mask"].sum())
    return {k: sum(v) / len(v) for k, v in parts.items()}, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="a recipe name (omnishift align ls) or recipe YAML")
    p.add_argument("model", help="the adaptor to start from (the phase's starting folder)")
    p.add_argument("--phase", type=int, default=1, help="the phase with the kd objective")
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()

    from omnishift.align.objectives import OBJECTIVES
    from omnishift.align.recipe import load_recipe, phase_config
    from omnishift.align.trainer import load_sets
    from omnishift.models.precision import cpu_description
    from omnishift.models.speech_llm import SpeechLLM
    from omnishift.schema import build

    recipe, origin = load_recipe(args.recipe)
    cfg = phase_config(recipe, args.phase, bf16=False, origin=origin)
    oc = next(o for o in cfg.objective_configs() if o.name == "kd")
    opts = build(OBJECTIVES["kd"].options, oc.options, "options")
    m = SpeechLLM.from_pretrained(args.model, reading=cfg.reading)
    train, _, _ = load_sets(m, cfg)
    pool = OBJECTIVES["kd"].select(train, opts)
    g = torch.Generator().manual_seed(0)
    picked = torch.randperm(len(pool), generator=g)[: oc.batch_size * args.steps].tolist()
    items = [pool[i] for i in picked]
    OBJECTIVES["kd"].prepare(m, items, opts, progress=False)
    batches = [items[s:s + oc.batch_size] for s in range(0, len(items), oc.batch_size)]
    m.requires_grad_(False)
    m.adaptor.requires_grad_(True)
    m.train()
    m.llm.eval()
    m.encoder.eval()
    result = {}
    for name in ("fp32", "bf16_llm"):
        if name == "bf16_llm":
            m.ctc_table()
            m.llm.to(torch.bfloat16)
        mean, tokens = _time_steps(m, batches, opts)
        step = sum(mean.values())
        result[name] = {**{k: round(v, 3) for k, v in mean.items()}, "step": round(step, 3),
                        "tokens_per_s": round(tokens / (step * (len(batches) - 2)), 1)}
    print(json.dumps({"model": args.model, "reading": cfg.reading, "batch": oc.batch_size,
                      "max_response_tokens": opts.max_response_tokens, "threads": torch.get_num_threads(),
                      **cpu_description(), "s_per_part": result,
                      "speedup": round(result["fp32"]["step"] / result["bf16_llm"]["step"], 2)}))


if __name__ == "__main__":
    main()
