#!/bin/bash
# The <= 2 h alignment recipe in mixed precision (issue 11, seventh sitting): recipe_2h.sh's three
# 8,000-clip sets, then CTC on a fresh MLP adaptor for 4,000 steps (configs/align/ctc2h_bf16_mlp.yaml),
# then two grown context layers (configs/align/ctc2h_bf16_grow.yaml), both with bf16_adaptor and the
# final dev pass only. Resumable: run it again after a kill.
# Prints the wall time of each step; run from the repository root with omnishift installed
# (pip install -e ".[piper,pico]").
#   nohup bash docs/results/align_cpu/recipe_2h_bf16.sh > runs/align/recipe_2h_bf16.log 2>&1 &
set -euo pipefail
timed() { local t0=$SECONDS; "$@"; echo "[recipe] $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s: $*"; }
SIL="--texts questions+responses --lead-silence 0.4 --trail-silence 0.5"
timed omnishift align-data --out runs/align/set_pico8k --n 8000 --seed 1 --engines pico
timed omnishift align-data --out runs/align/set_sil8k --n 8000 --seed 3 --engines espeak=3,pico=1 $SIL
timed omnishift align-data --out runs/align/set_piper8k --n 8000 --seed 5 --engines piper $SIL
timed omnishift align configs/align/ctc2h_bf16_mlp.yaml --resume
timed omnishift align configs/align/ctc2h_bf16_grow.yaml --resume
