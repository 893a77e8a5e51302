#!/usr/bin/env bash
# GS-LRM demo weights (issue 14): data, then training in two phases; resumable (re-run the same command).
#   nohup weights/recipes/gslrm_demo.sh > outputs/recipes/gslrm_demo.log 2>&1 &
# Phase 1 (gslrm_demo.yaml, run 4): 10000 steps on 1200 mice at the standard cameras. Phase 2 (gslrm_demo.rig.yaml,
# run 5): 5000 steps from phase 1's last checkpoint on the same mice at the standard and the rig's cameras.
# Then, if it beats the current model on unseen test mice (benchmarks/eval_gslrm_views.py, both --cameras):
#   facelift_lib.weights.ship("gslrm_demo", "outputs/recipes/gslrm_demo/run5", training_command=..., data=...)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one core each: the diffusion recipe trains beside it
"$PY" -m facelift_lib.standard_mice outputs/mice/64 --size 64 --train 1200 --val 16 --test 16
# folders: MouseDataConfig.cache_folder (<size>, or <size>_<camera_type> for a non-standard camera set)
"$PY" -m facelift_lib.standard_mice outputs/mice/64_mouse_rig_6view --size 64 --camera-type mouse_rig_6view \
    --train 1200 --val 16 --test 16
"$PY" -m facelift_lib.gslrm.train weights/recipes/gslrm_demo.yaml
"$PY" -m facelift_lib.gslrm.train weights/recipes/gslrm_demo.rig.yaml
