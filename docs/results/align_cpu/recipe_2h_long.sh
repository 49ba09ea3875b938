#!/bin/bash
# The alignment recipe, seventh sitting (issue 11): recipe_2h.sh's three 8,000-clip sets, then one
# longer float32 MLP phase (configs/align/ctc2h_mlp_long.yaml, 4,000 steps, final dev pass only)
# instead of 2,000 MLP + 1,000 grown-layer steps. Resumable: run it again after a kill.
# Prints the wall time of each step; run from the repository root with omnishift installed
# (pip install -e ".[piper,pico]").
#   nohup bash docs/results/align_cpu/recipe_2h_long.sh > runs/align/recipe_2h_long.log 2>&1 &
set -euo pipefail
timed() { local t0=$SECONDS; "$@"; echo "[recipe] $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s: $*"; }
SIL="--texts questions+responses --lead-silence 0.4 --trail-silence 0.5"
timed omnishift align-data --out runs/align/set_pico8k --n 8000 --seed 1 --engines pico
timed omnishift align-data --out runs/align/set_sil8k --n 8000 --seed 3 --engines espeak=3,pico=1 $SIL
timed omnishift align-data --out runs/align/set_piper8k --n 8000 --seed 5 --engines piper $SIL
timed omnishift align configs/align/ctc2h_mlp_long.yaml --resume
