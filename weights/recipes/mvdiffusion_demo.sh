#!/usr/bin/env bash
# Multi-view diffusion demo weights (issue 14): data, then training; resumable (re-run the same command).
#   nohup weights/recipes/mvdiffusion_demo.sh > outputs/recipes/mvdiffusion_demo.log 2>&1 &
#   weights/recipes/mvdiffusion_demo.sh weights/recipes/mvdiffusion_demo.run8.yaml   # another recipe (a tried run)
# Then ship it: facelift_lib.weights.ship (see weights/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one core each: the GS-LRM recipe trains beside it
"$PY" -m facelift_lib.standard_mice outputs/mice/128 --size 128 --train 1200 --val 16 --test 16
"$PY" -m facelift_lib.mvdiffusion.train --recipe "${1:-weights/recipes/mvdiffusion_demo.yaml}"
