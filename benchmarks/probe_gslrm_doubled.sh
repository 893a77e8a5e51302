#!/usr/bin/env bash
# Is 128² within the CPU budget as a warm start? The shipped 64² GS-LRM (weights/gslrm_demo.pt) at twice its
# resolution (gslrm.model.double_resolution: patch 4 -> 8, the same 16² tokens a view, each gaussian split over its
# 4 child pixels at half the scale, so it starts out computing what the 64² model computes), fine-tuned with the
# shipped phase 2's recipe (weights/recipes/gslrm_demo.rig.yaml: lr 3e-4, both camera sets) on the same 1200 mice
# rendered at 128², for STEPS steps on one thread. Compare at 128² with the 128² model trained from scratch
# (`SIZE=128 PATCH=8 benchmarks/probe_gslrm_limits.sh`) and with the shipped model itself:
#   benchmarks/probe_gslrm_doubled.sh
#   .venv/bin/python benchmarks/eval_gslrm_views.py --model shipped --model outputs/probes/gslrm_doubled_steps2500 \
#       --score-size 128 --n 16 --geometry
# Re-running resumes (resume: latest).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-2500}
run=outputs/probes/gslrm_doubled_steps$STEPS
mkdir -p outputs/probes
OMP_NUM_THREADS=1 "$PY" -m facelift_lib.standard_mice outputs/mice/128 --size 128 --train 1200 --val 16 --test 16
OMP_NUM_THREADS=1 "$PY" -m facelift_lib.standard_mice outputs/mice/128_mouse_rig_6view --size 128 \
    --camera-type mouse_rig_6view --train 1200 --val 16 --test 16
# scale_bias, scale_max_log: the shipped model's -2.3, -1.2 minus log 2 (the halved scales; a mismatch is an error)
sed -e "s#^run_dir: .*#run_dir: $run#" \
    -e "s#^train_list: .*#train_list: [outputs/mice/128/train_0-1199.txt, outputs/mice/128_mouse_rig_6view/train_0-1199.txt]#" \
    -e "s#^init_from: .*#init_from: weights/gslrm_demo.pt\ninit_double_resolution: true#" \
    -e "s#^image_size: .*#image_size: 128#" \
    -e "s#^max_steps: .*#max_steps: $STEPS#" \
    -e "s#^keep_checkpoints: .*#keep_checkpoints: 2#" \
    -e "s#^model: {image_size: 64, patch_size: 4, d: 128, n_layers: 4, n_heads: 4, depth_range: 1.0}#model: {image_size: 128, patch_size: 8, d: 128, n_layers: 4, n_heads: 4, depth_range: 1.0, scale_bias: -2.993147180559945, scale_max_log: -1.8931471805599451}#" \
    weights/recipes/gslrm_demo.rig.yaml > "$run.yaml"
grep -q "^init_double_resolution: true" "$run.yaml" && grep -q "patch_size: 8" "$run.yaml"  # the recipe changed: fix the sed
OMP_NUM_THREADS=1 "$PY" -m facelift_lib.gslrm.train "$run.yaml"
