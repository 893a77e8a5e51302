#!/usr/bin/env bash
# GS-LRM demo weights (issue 14): data, then training; resumable (re-run the same command).
#   nohup nice -n 10 weights/recipes/gslrm_demo.sh > outputs/recipes/gslrm_demo.log 2>&1 &
# Then, if it beats the current model on unseen test mice (benchmarks/eval_gslrm_views.py):
#   facelift_lib.weights.ship("gslrm_demo", "outputs/recipes/gslrm_demo/run4", training_command=..., data=...)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one core each: the diffusion recipe trains beside it
"$PY" -m facelift_lib.standard_mice outputs/mice/64 --size 64 --train 1200 --val 16 --test 16
"$PY" -m facelift_lib.gslrm.train weights/recipes/gslrm_demo.yaml
