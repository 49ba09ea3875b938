"""Tune CTC+LLM beam settings on the alignment sets' held-out synthetic question clips (never on LLaMA Q)."""
import json, sys, time, torch
from omnishift.models.speech_llm import SpeechLLM
from heldout import heldout  # beside this script
from omnishift.models.ctc_decode import BeamSettings, LLMPrior, ctc_beam_search, user_turn_context
from omnishift.evaluate.wer import corpus_wer
torch.set_num_threads(1)
m = SpeechLLM.from_pretrained(sys.argv[1]); n = int(sys.argv[2])
grid = [(0.0, 0.0), (0.0, 1.0), (0.3, 1.0), (0.3, 2.0), (0.5, 1.0), (0.5, 2.0), (0.5, 3.0), (0.8, 2.0), (0.8, 3.0)]

pairs = {g: [] for g in grid}; ctx = user_turn_context(m.tokenizer); t0 = time.time()
for name in sys.argv[3:]:
    dev = heldout(name, n)
    for it, lp in zip(dev, m.ctc_log_probs([it["encoder_states"] for it in dev])):
        prior = LLMPrior(m.llm, ctx)
        for lw, b in grid:
            ids = ctc_beam_search(lp, prior, BeamSettings(beam=4, lm_weight=lw, length_bonus=b, token_min_logp=-5.0))
            pairs[(lw, b)].append((it["text"], m.tokenizer.decode(ids).strip()))
    print(name, "done", round(time.time() - t0), flush=True)
res = sorted(({"lm_weight": g[0], "length_bonus": g[1], "dev_wer": round(corpus_wer(p)["wer"], 4)} for g, p in pairs.items()), key=lambda r: r["dev_wer"])
print(json.dumps({"model": sys.argv[1], "sets": sys.argv[3:], "clips_per_set": n, "grid": res}, indent=1))
