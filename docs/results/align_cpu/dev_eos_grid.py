"""Choose the beam decoder's end-of-turn weight on held-out synthetic question clips (never on LLaMA Q).

python docs/results/align_cpu/dev_eos_grid.py runs/align/ctc_sil/final 60 set_pico12k set32k > dev_eos_grid.json

The prefix beam search does not depend on eos_weight (it only rescores the hypotheses alive at the
last frame), so each clip is searched once per beam width and rescored for every weight.
"""
import json, sys, time

import torch

from heldout import heldout  # beside this script

from omnishift.evaluate.wer import corpus_wer
from omnishift.models.ctc_decode import BeamSettings, LLMPrior, final_scores, prefix_beams, user_turn_context, user_turn_end
from omnishift.models.speech_llm import SpeechLLM

torch.set_num_threads(1)
m = SpeechLLM.from_pretrained(sys.argv[1]); n = int(sys.argv[2])
weights, beams = [0.0, 0.25, 0.5, 1.0, 2.0], [4, 8]


pairs = {(b, e): [] for b in beams for e in weights}
ctx, end, t0 = user_turn_context(m.tokenizer), user_turn_end(m.tokenizer), time.time()
for name in sys.argv[3:]:
    dev = heldout(name, n)
    for it, lp in zip(dev, m.ctc_log_probs([it["encoder_states"] for it in dev])):
        prior = LLMPrior(m.prior_llm(), ctx)
        for b in beams:
            alive = prefix_beams(lp, prior, BeamSettings(beam=b))
            for e in weights:
                scores = final_scores(alive, prior, BeamSettings(beam=b, eos_weight=e), end)
                pairs[(b, e)].append((it["text"], m.tokenizer.decode(list(max(scores, key=scores.get))).strip()))
    print(name, "done", round(time.time() - t0), file=sys.stderr, flush=True)
res = [{"beam": b, "eos_weight": e, "dev_wer": round(corpus_wer(p)["wer"], 4)} for (b, e), p in pairs.items()]
print(json.dumps({"model": sys.argv[1], "sets": sys.argv[3:], "clips_per_set": n, "lm_weight": 0.5,
                  "length_bonus": 3.0, "grid": res}, indent=1))
