#!/bin/bash
# The alignment recipe, seventh sitting (issue 11): recipe_2h.sh's three 8,000-clip sets, then one
# longer float32 MLP phase (configs/align/ctc2h_mlp_long.yaml, 4,000 steps, final dev pass only)
# instead of 2,000 MLP + 1,000 grown-layer steps. Resumable: run it again after a kill.
# Prints the wall time of each step; run from the repository root with omnishift installed
# (pip install -e ".[piper,pico]").
#   nohup bash docs/results/align_cpu/recipe_2h_long.sh > runs/align/recipe_2h_long.log 2>&1 &
set -euo pipefail
source "$(dirname "$0")/recipe_sets.sh"   # the three sets, and `timed`
timed omnishift align configs/align/ctc2h_mlp_long.yaml --resume
