#!/bin/bash
# What an aligned adaptor hears on the 300 LLaMA Questions recordings, LLM frozen (issue 11):
# greedy CTC WER, beam-4 + LLM + end-of-turn 0.5 WER and S2T, and the listening gain (100 items).
#   bash docs/results/align_cpu/eval_recipe.sh runs/align/ctc2h/final runs/align/eval_ctc2h
set -euo pipefail
SRC=$1; OUT=$2
CACHE=runs/feature_cache_clip
DEC="--ctc-beam 4 --ctc-lm-weight 0.5 --ctc-length-bonus 3.0 --ctc-eos-weight 0.5"
timed() { local t0=$SECONDS; "$@"; echo "[eval] $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s: $*"; }
timed omnishift eval-ctc "$SRC" --benchmark llama_questions --out "$OUT/llamaq_ctc_greedy"
# decode_eval.py also (re)writes runs/align/listen/llamaq_self.jsonl (manifests.py), which eval-listening reads
timed python docs/results/align_cpu/decode_eval.py "$SRC" "$OUT/b4_eos" 4 0.5
timed omnishift eval "$OUT/b4_eos" --benchmark llama_questions --mode s2t --feature-cache $CACHE --out "$OUT/b4_eos/llamaq_s2t"
timed omnishift eval-listening "$SRC" --data runs/align/listen/llamaq_self.jsonl --limit 100 --speech-input ctc_top1 $DEC \
    --out "$OUT/listen_ctc_top1_beam4_eos05.json"
