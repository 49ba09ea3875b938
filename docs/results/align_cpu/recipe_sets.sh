#!/bin/bash
# The three 8,000-clip alignment sets of the <= 2 h recipes (issue 11), each build timed; sourced by
# recipe_2h.sh, recipe_2h_bf16.sh and recipe_2h_long.sh, which then call `timed` for their training parts.
# Resumable: align-data picks up where a killed build stopped.
timed() { local t0=$SECONDS; "$@"; echo "[recipe] $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s: $*"; }
SIL="--texts questions+responses --lead-silence 0.4 --trail-silence 0.5"
timed omnishift align-data --out runs/align/set_pico8k --n 8000 --seed 1 --engines pico
timed omnishift align-data --out runs/align/set_sil8k --n 8000 --seed 3 --engines espeak=3,pico=1 $SIL
timed omnishift align-data --out runs/align/set_piper8k --n 8000 --seed 5 --engines piper $SIL
