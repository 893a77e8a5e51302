#!/usr/bin/env bash
# GS-LRM demo weights at 128² (issue 14): data, then training; resumable (re-run the same command).
#   nohup weights/recipes/gslrm_demo_128.sh > outputs/recipes/gslrm_demo_128.log 2>&1 &
# Starts from the shipped 64² model (weights/gslrm_demo.pt, made by weights/recipes/gslrm_demo.sh) at twice its
# resolution and fine-tunes it 2500 steps on the 1200 mice at 128², the standard and the rig's cameras (phase 1,
# gslrm_demo_128.yaml), then 4000 steps more from phase 1's last checkpoint (phase 2, gslrm_demo_128.phase2.yaml).
# The shipped weights/gslrm_demo_128.pt is phase 2's last checkpoint (since 2026-12-04; phase 1's before). Ship:
#   facelift_lib.weights.ship("gslrm_demo_128", "outputs/recipes/gslrm_demo_128/phase2", training_command=..., data=...)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one core: the other trains or evaluates
# folders: MouseDataConfig.cache_folder (<size>, or <size>_<camera_type> for a non-standard camera set)
"$PY" -m facelift_lib.standard_mice outputs/mice/128 --size 128 --train 1200 --val 16 --test 16
"$PY" -m facelift_lib.standard_mice outputs/mice/128_mouse_rig_6view --size 128 --camera-type mouse_rig_6view \
    --train 1200 --val 16 --test 16
"$PY" -m facelift_lib.gslrm.train weights/recipes/gslrm_demo_128.yaml
"$PY" -m facelift_lib.gslrm.train weights/recipes/gslrm_demo_128.phase2.yaml
