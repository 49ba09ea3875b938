#!/bin/bash
# The <= 2 h alignment recipe (issue 11, sixth sitting): three 8,000-clip sets, then CTC on a fresh
# MLP adaptor (configs/align/ctc2h_mlp.yaml), then two grown context layers (configs/align/ctc2h_grow.yaml).
# Resumable: run it again after a kill (align-data and align --resume pick up where they stopped).
# Prints the wall time of each step; run from the repository root with omnishift installed
# (pip install -e ".[piper,pico]").
#   nohup bash docs/results/align_cpu/recipe_2h.sh > runs/align/recipe_2h.log 2>&1 &
set -euo pipefail
source "$(dirname "$0")/recipe_sets.sh"   # the three sets, and `timed`
timed omnishift align configs/align/ctc2h_mlp.yaml --resume
timed omnishift align configs/align/ctc2h_grow.yaml --resume
