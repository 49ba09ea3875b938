"""One alignment (CTC) training step of a real adaptor: float32 vs bfloat16 autocast on the adaptor.

Run: ``python benchmarks/align_step.py RECIPE FOLDER [--phase 0] [--steps 12]``, e.g. ``cpu_listen
runs/align/cpu_listen/final`` (the recipe's sets must exist: ``omnishift align cpu_listen`` builds them first).
Prints one JSON object with the mean seconds
of a forward + backward step (batch of the config's size, its CTC options; the first 2 steps are
warm-up and not counted) for ``fp32`` and ``bf16_adaptor``, each measured twice in alternation, and
``speedup``: the ratio of the two means, measured in this one run. The same batches are used for both.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="a recipe name (omnishift align ls) or recipe YAML")
    p.add_argument("model")
    p.add_argument("--phase", type=int, default=0, help="which phase's data and CTC options")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()

    from omnishift.align.objectives import CTCOptions, ctc_loss
    from omnishift.align.recipe import load_recipe, phase_config
    from omnishift.align.trainer import load_sets
    from omnishift.models.precision import cpu_description
    from omnishift.models.speech_llm import SpeechLLM
    from omnishift.schema import build

    recipe, origin = load_recipe(args.recipe)
    cfg = phase_config(recipe, args.phase, bf16=False, origin=origin)  # both precisions are timed below
    oc = cfg.objective_configs()[0]
    opts = build(CTCOptions, oc.options, "options")
    m = SpeechLLM.from_pretrained(args.model)
    train, _, _ = load_sets(m, cfg)
    m.requires_grad_(False)
    m.adaptor.requires_grad_(True)
    m.adaptor.train()
    g = torch.Generator().manual_seed(0)
    batches = [[train[i] for i in torch.randint(0, len(train), (oc.batch_size,), generator=g).tolist()]
               for _ in range(args.steps)]
    times: dict[str, list[float]] = {"fp32": [], "bf16_adaptor": []}
    for name in ["fp32", "bf16_adaptor"] * 2:
        o = replace(opts, bf16_adaptor=name == "bf16_adaptor")
        for j, b in enumerate(batches):
            t = time.perf_counter()
            s, n = ctc_loss(m, b, o)
            (s / n).backward()
            m.adaptor.zero_grad(set_to_none=True)
            if j >= 2:
                times[name].append(time.perf_counter() - t)
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    print(json.dumps({"model": args.model, "adaptor_layers": m.config.adaptor_layers, "batch": oc.batch_size,
                      "threads": torch.get_num_threads(), **cpu_description(),
                      "s_per_step": {k: round(v, 3) for k, v in mean.items()},
                      "speedup": round(mean["fp32"] / mean["bf16_adaptor"], 2)}))


if __name__ == "__main__":
    main()
