#!/usr/bin/env bash
# Multi-view diffusion demo weights (issue 14): data, then training; resumable (re-run the same command).
#   nohup weights/recipes/mvdiffusion_demo.sh > outputs/recipes/mvdiffusion_demo.log 2>&1 &
# Then ship it: facelift_lib.weights.ship (see weights/README.md).
# The shipped run's schedule, exactly: a cosine over max_steps 5000 until step 1000 (stop_at_step), then resumed
# with the recipe's max_steps 4000 (the shipped run was shortened there to end inside its session).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one core each: the GS-LRM recipe trains beside it
recipe=weights/recipes/mvdiffusion_demo.yaml
run_dir=$(sed -n 's/^run_dir: *//p' "$recipe")
"$PY" -m facelift_lib.standard_mice outputs/mice/64 --size 64 --train 1200 --val 16 --test 16
if [ ! -f "$run_dir/checkpoints/ckpt_0000000000001000.pt" ]; then
  mkdir -p "$run_dir"
  sed -e 's/^max_steps: 4000 /max_steps: 5000 /' "$recipe" > "$run_dir.phase1.yaml"
  echo "stop_at_step: 1000" >> "$run_dir.phase1.yaml"
  "$PY" -m facelift_lib.mvdiffusion.train --recipe "$run_dir.phase1.yaml"
fi
"$PY" -m facelift_lib.mvdiffusion.train --recipe "$recipe"
