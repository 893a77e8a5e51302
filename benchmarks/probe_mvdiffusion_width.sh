#!/usr/bin/env bash
# Does the diffusion demo model's gap come from capacity? Train the shipped recipe (weights/recipes/mvdiffusion_demo.yaml)
# at another UNet width on the same mice with the shipped run's schedule for its first 1000 steps (max_steps 5000:
# the shipped run was resumed at step 1000 with 4000), stop at step STOP, then compare with the shipped run's own
# checkpoint of that step on validation mice:
#   benchmarks/probe_mvdiffusion_width.sh                      # smoke width [16, 32, 64, 64], stop at 1000
#   .venv/bin/python benchmarks/eval_mvdiffusion_views.py --split val --n 8 --data outputs/mice \
#       --model outputs/recipes/mvdiffusion_demo/run/checkpoints/ckpt_0000000000001000.pt \
#       --model outputs/probes/mvdiffusion_width_16-32-64-64/checkpoints/ckpt_0000000000001000.pt
# THEN=4000 then resumes at STOP with max_steps 4000, the shipped run's whole schedule at this width:
#   THEN=4000 benchmarks/probe_mvdiffusion_width.sh              # then eval_mvdiffusion_views on its run folder
set -euo pipefail
cd "$(dirname "$0")/.."
WIDTHS=${WIDTHS:-16, 32, 64, 64}
STOP=${STOP:-1000}
tag=$(echo "$WIDTHS" | tr -d ' ' | tr ',' '-')
run=outputs/probes/mvdiffusion_width_$tag
mkdir -p outputs/probes
sed -e "s#^run_dir: .*#run_dir: $run#" -e "s#block_out_channels: \[24, 48, 96, 96\]#block_out_channels: [$WIDTHS]#" \
    -e "s#^max_steps: 4000 #max_steps: 5000 #" weights/recipes/mvdiffusion_demo.yaml > "$run.yaml"
stop_ckpt=$(printf "%s/checkpoints/ckpt_%016d.pt" "$run" "$STOP")
if [ ! -f "$stop_ckpt" ]; then  # stop_at_step: a checkpoint at STOP, the lr schedule still that of max_steps 5000
  { cat "$run.yaml"; echo "stop_at_step: $STOP"; } > "$run.phase1.yaml"
  OMP_NUM_THREADS=1 .venv/bin/python -m facelift_lib.mvdiffusion.train --recipe "$run.phase1.yaml"
fi
ls "$stop_ckpt"
if [ -n "${THEN:-}" ]; then  # resume (resume: latest) with the shorter schedule, as the shipped run did at step 1000
  sed "s#^max_steps: 5000 #max_steps: $THEN #" "$run.yaml" > "$run.then.yaml"
  OMP_NUM_THREADS=1 .venv/bin/python -m facelift_lib.mvdiffusion.train --recipe "$run.then.yaml"
fi
