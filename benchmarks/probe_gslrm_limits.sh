#!/usr/bin/env bash
# Where is the GS-LRM demo model's limit: capacity or data? Train run 3's recipe (weights/recipes/gslrm_demo.yaml,
# the 5000-step schedule that run 4 doubled) with one thing changed, on one thread, then score it against run 3 on
# the 16 test mice (run 3 = `git show 1c90b2a:weights/gslrm_demo.pt`, trained with exactly this schedule):
#   D=192 LAYERS=6 HEADS=6 benchmarks/probe_gslrm_limits.sh   # capacity: 3.2x the parameters (BENCHMARKS)
#   MICE=300 benchmarks/probe_gslrm_limits.sh                   # data: a quarter of the training mice
#   SIZE=128 PATCH=8 benchmarks/probe_gslrm_limits.sh           # resolution: 128² views, the same 16² tokens a view
#   .venv/bin/python benchmarks/eval_gslrm_views.py --model <run 3's file> --model outputs/probes/gslrm_<tag> \
#       --n 16 --geometry
# Re-running resumes (resume: latest). STEPS (default 5000) sets max_steps, so the cosine is the whole schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
D=${D:-128}; LAYERS=${LAYERS:-4}; HEADS=${HEADS:-4}; MICE=${MICE:-1200}; STEPS=${STEPS:-5000}
SIZE=${SIZE:-64}; PATCH=${PATCH:-4}
tag=d${D}_l${LAYERS}_mice${MICE}_steps${STEPS}
[ "$SIZE" = 64 ] && [ "$PATCH" = 4 ] || tag=${tag}_s${SIZE}_p${PATCH}  # the earlier probes' folders keep their names
run=outputs/probes/gslrm_$tag
mkdir -p outputs/probes
# the mice (cached; a range's own list file, train_0-<MICE-1>.txt)
OMP_NUM_THREADS=1 "$PY" -m facelift_lib.standard_mice "outputs/mice/$SIZE" --size "$SIZE" --train "$MICE" --val 16 --test 16
sed -e "s#^run_dir: .*#run_dir: $run#" \
    -e "s#^train_list: .*#train_list: outputs/mice/$SIZE/train_0-$((MICE - 1)).txt#" \
    -e "s#^image_size: .*#image_size: $SIZE#" \
    -e "s#^max_steps: .*#max_steps: $STEPS#" \
    -e "s#^keep_checkpoints: .*#keep_checkpoints: 2#" \
    -e "s#^model: {image_size: 64, patch_size: 4, d: 128, n_layers: 4, n_heads: 4,#model: {image_size: $SIZE, patch_size: $PATCH, d: $D, n_layers: $LAYERS, n_heads: $HEADS,#" \
    -e "s/# SMOKE_MODEL's size, 0.84 M/# the probe's size/" \
    weights/recipes/gslrm_demo.yaml > "$run.yaml"
grep -q "image_size: $SIZE, patch_size: $PATCH, d: $D, n_layers: $LAYERS, n_heads: $HEADS" "$run.yaml"  # the recipe's model line changed: fix the sed
OMP_NUM_THREADS=1 "$PY" -m facelift_lib.gslrm.train "$run.yaml"
