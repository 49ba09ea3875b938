"""Reading an aligned adaptor's CTC output: greedy vs prefix beam search vs beam search with the LLM.

Run: ``python benchmarks/ctc_decode.py MODEL [--benchmark llama_questions] [--n 40] [--beam 4]
[--lm-weight 0.5] [--length-bonus 2.0] [--threads 2]`` where MODEL is a speech-LLM folder with a
CTC head (``omnishift align``). Prints one JSON object:

* ``s_per_clip``: decoding seconds per clip (encoder and adaptor excluded: the CTC log-probabilities
  are computed once and shared) for ``greedy``, ``beam`` (no LM) and ``beam_lm`` (the LLM as LM);
* ``wer``: corpus WER of each transcript against the question text on the same clips;
* ``slowdown_beam_lm_vs_greedy``: ratio of the two, measured in this one run.

The first ``--n`` items are used; on LLaMA Questions this is a test set, so the settings given
here should come from a dev set (see ``experiments/align_cpu/README.md``), not be tuned on it.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--benchmark", default="llama_questions")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lm-weight", type=float, default=0.5)
    p.add_argument("--length-bonus", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from omnishift.data.audio import load_audio
    from omnishift.evaluate.qa import load_benchmark
    from omnishift.evaluate.wer import corpus_wer
    from omnishift.models.ctc_decode import BeamSettings
    from omnishift.models.precision import cpu_description
    from omnishift.models.speech_llm import SpeechLLM

    torch.set_num_threads(args.threads)
    model = SpeechLLM.from_pretrained(args.model)
    examples = load_benchmark(args.benchmark, ["s2t"], limit=args.n)
    states = model.encode_audio([load_audio(e.audio, item=e.id) for e in examples])
    logps = list(model.ctc_log_probs(states))  # n clips x (T, 49k): keep --n small
    ways = {"greedy": None,
            "beam": BeamSettings(beam=args.beam, lm_weight=0.0, length_bonus=0.0),
            "beam_lm": BeamSettings(beam=args.beam, lm_weight=args.lm_weight, length_bonus=args.length_bonus)}
    secs, wer = {}, {}
    for name, settings in ways.items():
        model.beam_settings = settings
        t0 = time.perf_counter()
        hyps = [model.tokenizer.decode(model.ctc_tokens(lp)).strip() for lp in logps]
        secs[name] = (time.perf_counter() - t0) / len(examples)
        wer[name] = corpus_wer([(e.text, h) for e, h in zip(examples, hyps)])["wer"]
    print(json.dumps({"model": args.model, "benchmark": args.benchmark, "n": len(examples), "beam": args.beam,
                      "lm_weight": args.lm_weight, "length_bonus": args.length_bonus, "threads": args.threads,
                      **cpu_description(),
                      "s_per_clip": {k: round(v, 4) for k, v in secs.items()},
                      "wer": {k: round(v, 4) for k, v in wer.items()},
                      "slowdown_beam_lm_vs_greedy": round(secs["beam_lm"] / max(secs["greedy"], 1e-9), 1)}, indent=2))


if __name__ == "__main__":
    main()
