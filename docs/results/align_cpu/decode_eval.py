"""Beam-decode the 300 LLaMA Questions recordings with an aligned adaptor and measure what it hears.

python docs/results/align_cpu/decode_eval.py SRC OUT BEAM [EOS_WEIGHT]

Writes the speech-LLM folder OUT (SRC's adaptor, ``speech_input: ctc_top1``, ``ctc_decoding`` beam
BEAM / LM 0.5 / length bonus 3.0 / end-of-turn EOS_WEIGHT), decodes every recording into the token
cache of ``runs/feature_cache_clip`` with 2 processes, and writes OUT/llamaq_ctc (transcripts, WER).
S2T is then ``omnishift eval OUT --benchmark llama_questions --mode s2t --feature-cache
runs/feature_cache_clip --out D`` (it reads the same cached tokens).
"""
import json
import os
import sys
import time

from omnishift.align.commands import eval_ctc
from omnishift.align.decode import decode_clips
from omnishift.data.manifest import read_manifest
from omnishift.models.speech_llm import SpeechLLM

from manifests import write_all  # beside this script

CACHE = "runs/feature_cache_clip"

if __name__ == "__main__":
    BENCH = write_all()[0]  # cheap and deterministic: rebuilt on every run
    src, out, beam = sys.argv[1], sys.argv[2], int(sys.argv[3])
    decoding = {"beam": beam, "lm_weight": 0.5, "length_bonus": 3.0}
    if len(sys.argv) > 4 and float(sys.argv[4]):
        decoding["eos_weight"] = float(sys.argv[4])
    m = SpeechLLM.from_pretrained(src, speech_input="ctc_top1", ctc_decoding=decoding)
    m.save_pretrained(out, llm_is_base=True)
    t = time.time()
    print(decode_clips(out, CACHE, [BENCH], workers=int(os.environ.get("WORKERS", 2))), round(time.time() - t), "s", flush=True)
    m = SpeechLLM.from_pretrained(out)
    m.use_token_cache(f"{CACHE}/ctc_tokens")
    print(json.dumps(eval_ctc(m, read_manifest(BENCH), f"{out}/llamaq_ctc", feature_cache=CACHE)))
