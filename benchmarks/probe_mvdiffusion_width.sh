#!/usr/bin/env bash
# Does the diffusion demo model's gap come from capacity? Train the shipped recipe of run 5 (weights/recipes/mvdiffusion_demo.run5.yaml)
# at another UNet width on the same mice with the recipe's schedule, stop at step STOP (stop_at_step: a checkpoint,
# the lr schedule still that of the recipe's max_steps), then compare with the shipped run's checkpoint of that step:
#   benchmarks/probe_mvdiffusion_width.sh                      # smoke width [16, 32, 64, 64], stop at 1000
#   .venv/bin/python benchmarks/eval_mvdiffusion_views.py --split val --n 8 --data outputs/mice \
#       --model outputs/recipes/mvdiffusion_demo/run3/checkpoints/ckpt_0000000000001000.pt \
#       --model outputs/probes/mvdiffusion_width_16-32-64-64/checkpoints/ckpt_0000000000001000.pt
# THEN=1 then resumes to the recipe's max_steps (its whole schedule at this width).
# POWER=2 also sets timestep_power (training timesteps favour the noisy end; TrainParams.timestep_power):
#   WIDTHS="24, 48, 96, 96" POWER=2 benchmarks/probe_mvdiffusion_width.sh    # the recipe's width, power 2
#   WIDTHS="24, 48, 96, 96" benchmarks/probe_mvdiffusion_width.sh            # ... and its baseline on this machine
# (Run 1's probe, in BENCHMARKS, ran run 1's two-phase schedule: max_steps 5000 to step 1000, then 4000.)
set -euo pipefail
cd "$(dirname "$0")/.."
WIDTHS=${WIDTHS:-16, 32, 64, 64}
STOP=${STOP:-1000}
POWER=${POWER:-1}
tag=$(echo "$WIDTHS" | tr -d ' ' | tr ',' '-')$([ "$POWER" = 1 ] || echo "_tpow$POWER")
run=outputs/probes/mvdiffusion_width_$tag
mkdir -p outputs/probes
sed -e "s#^run_dir: .*#run_dir: $run#" -e "s#block_out_channels: \[24, 48, 96, 96\]#block_out_channels: [$WIDTHS]#" \
    weights/recipes/mvdiffusion_demo.run5.yaml > "$run.yaml"
[ "$POWER" = 1 ] || echo "timestep_power: $POWER" >> "$run.yaml"
stop_ckpt=$(printf "%s/checkpoints/ckpt_%016d.pt" "$run" "$STOP")
if [ ! -f "$stop_ckpt" ]; then
  { cat "$run.yaml"; echo "stop_at_step: $STOP"; } > "$run.phase1.yaml"
  OMP_NUM_THREADS=1 .venv/bin/python -m facelift_lib.mvdiffusion.train --recipe "$run.phase1.yaml"
fi
ls "$stop_ckpt"
if [ -n "${THEN:-}" ]; then  # resume (resume: latest) to the recipe's max_steps
  OMP_NUM_THREADS=1 .venv/bin/python -m facelift_lib.mvdiffusion.train --recipe "$run.yaml"
fi
