#!/usr/bin/env bash
# Can the diffusion demo model fit the mapping from the input view to the other views at all? Train the shipped
# recipe's model (weights/recipes/mvdiffusion_demo.run5.yaml, ATTN attention levels, default 1 = run 5) on only N
# training mice (default 8: seeds 0..7) for STEPS steps, then ask its mean guess of each view from pure noise on
# those same mice and on 8 validation mice:
#   benchmarks/probe_mvdiffusion_overfit.sh            # then it prints the x̂0 probe's table
# Memorised (own view >> 0.51 on its training mice): the model can express the mapping; the 1200-mouse run's
# plateau is then optimisation at scale (steps). Not memorised: the architecture/conditioning does not carry it.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-8}
STEPS=${STEPS:-600}
ATTN=${ATTN:-1}
run=outputs/probes/mvdiffusion_overfit_${N}mice_attn${ATTN}_steps$STEPS
mkdir -p outputs/probes
.venv/bin/python -m facelift_lib.standard_mice outputs/mice/128 --size 128 --train "$N" --val 16 --test 16
sed -e "s#^run_dir: .*#run_dir: $run#" -e "s#^train_list: .*#train_list: outputs/mice/128/train_0-$((N - 1)).txt#" \
    -e "s#frame_size: 96}#frame_size: 96, attention_levels: $ATTN}#" -e "s#^max_steps: .*#max_steps: $STEPS#" \
    -e "s#^warmup_steps: .*#warmup_steps: 50#" -e "s#^val_every: .*#val_every: 0#" \
    -e "s#^checkpoint_every: .*#checkpoint_every: $STEPS#" weights/recipes/mvdiffusion_demo.run5.yaml > "$run.yaml"
grep -q "attention_levels: $ATTN}" "$run.yaml" || { echo "$run.yaml: could not set attention_levels (recipe changed?)" >&2; exit 1; }
OMP_NUM_THREADS=1 .venv/bin/python -m facelift_lib.mvdiffusion.train --recipe "$run.yaml"
OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_mvdiffusion_x0.py --model "$run" --t 999 --n "$N" --size 128 --split train
OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_mvdiffusion_x0.py --model "$run" --t 999 --n 8 --size 128 --split val
