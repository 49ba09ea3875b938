"""Forgetting curves of Stage 1 at the 1k scale, through the continuous speech path (ctc_soft).

Run from the repository root: ``python experiments/forgetting_1k/curves.py [METHOD ...]``
(default: all four, in order; resumable: run it again). It trains each method from the aligned
adaptor read as ``ctc_soft`` (``runs/align/soft_untrained``), measures drift from that starting model on
200 held-out Dolly instructions every 32 steps (``omnishift.evaluate.drift.DriftProbe``), then
evaluates T2T and S2T on the 300 LLaMA Questions recordings. Results: README.md beside this file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from omnishift.evaluate.drift import DriftProbe, base_answers_unit, drift_prompts
from omnishift.models.speech_llm import load_speech_llm
from omnishift.train.config import load_config
from omnishift.train.trainer import train

START = "runs/align/soft_untrained"
OUT = Path("runs/forgetting_1k")
COMMON = ["data.source=instructions:alpaca_alpagasus_random9k", "data.limit=1010",
          "data.audio_dir=runs/audio/alpagasus1k", "data.feature_cache=runs/feature_cache_1k",
          "data.max_response_tokens=64", "loop.epochs=1", "loop.batch_size=4", "loop.grad_accum=2",
          "loop.progress=false", "checkpoint.save_every=16", f"model={START}"]
METHODS = {"full": ("configs/default/full.yaml", []),
           "text_control": ("configs/default/full.yaml", ["method.name=text_control"]),
           "lora": ("configs/default/lora.yaml", ["optim.lr=2.0e-4"]),
           "layer_lr": ("configs/default/layer_lr.yaml",
                        ["method.options.coefficients=experiments/importance_smollm2/layer_lr_lambda0.4.json"])}


def main(methods: list[str]) -> None:
    base = load_speech_llm(START)
    prompts = drift_prompts("instructions:dolly_alpagasus_3k", None, 200)
    answers = base_answers_unit(base, prompts, OUT / "drift_base", max_new_tokens=32)
    probe = DriftProbe(base, prompts, answers, every=32, flip=True, max_new_tokens=32)
    for name in methods:
        config, extra = METHODS[name]
        cfg = load_config(config, [*COMMON, *extra, f"out_dir={OUT / name}"])
        final = train(cfg, resume=True, probe=probe)
        for mode in ("t2t", "s2t"):
            if not (OUT / "eval" / name / mode / "summary.json").is_file():
                subprocess.run(["omnishift", "eval", "qa", str(final), "--benchmark", "llama_questions", "--mode", mode,
                                "--feature-cache", "runs/feature_cache_1k", "--out", str(OUT / "eval" / name)],
                               check=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(METHODS))
