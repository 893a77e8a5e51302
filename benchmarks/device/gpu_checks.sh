#!/usr/bin/env bash
# The prepared GPU check: runs ON the lent GPU machine, in the repo root, as the run tool's one command.
#
#   first, here:  bash benchmarks/device/prepare.sh     (wheels + fixtures into .device/, prints the size)
#   run tool:     command   "bash benchmarks/device/gpu_checks.sh"
#                 carry     [".device"]
#                 timeout_s 540
#
# Budget: a task gets 15 minutes of device time in all, the machine's start-up (minutes) included, so this
# is meant to run once. Every step has its own `timeout`, and the steps share a deadline (DEADLINE s after
# the start) so that the summary is still written before the tool's own limit; a step that fails or times
# out is recorded and the next one runs. Logs (4 files, the tool takes back at most 8) go to $OUT:
#   setup.log (install, versions, imports, gsplat build), tests.log (pytest -m gpu), bench.log, summary.txt
#
# Order: the GS-LRM and UNet benchmarks do not use gsplat, so they run before its JIT build (minutes of nvcc,
# the step most likely to be slow or to fail); a slow build then cannot cost the two BENCHMARKS.md CUDA rows.
set -uo pipefail  # no -e: a failing step must not stop the others
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-/tmp/gpu_checks_out}  # the run tool sets OUT; the default is for a dry run elsewhere
mkdir -p "$OUT"
DEADLINE=${DEADLINE:-510}
SECONDS=0
RESULTS=()

# step NAME CAP LOG CMD...: run CMD for at most CAP s (less if the deadline is nearer), output to LOG and
# stdout, and record its rc (124 = timed out) and wall time.
step() {
  local name=$1 cap=$2 log=$3 left t0 rc
  shift 3
  left=$((DEADLINE - SECONDS))
  if ((left < 30)); then
    RESULTS+=("$(printf '%-18s skipped: %3d s left before the deadline' "$name" "$left")")
    return
  fi
  ((cap > left)) && cap=$left
  echo "=== $name (at ${SECONDS}s, cap ${cap}s): $*" | tee -a "$OUT/$log"
  t0=$SECONDS
  timeout -k 10 "$cap" "$@" 2>&1 | tee -a "$OUT/$log"
  rc=${PIPESTATUS[0]}
  RESULTS+=("$(printf '%-18s rc=%-3d %4d s' "$name" "$rc" "$((SECONDS - t0))")")
}

if [[ ! -d .device/whl || ! -d .device/shared/facelift_reference ]]; then
  echo ".device/ is missing: run benchmarks/device/prepare.sh here and pass carry [\".device\"]" | tee "$OUT/summary.txt"
  exit 2
fi

# The image cannot fetch: the wheels prepare.sh downloaded go into /tmp/site, ahead of the image's packages.
step install 120 setup.log python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .device/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
export FACELIFT_SHARED=$PWD/.device/shared  # tests/conftest.py reads the FaceLift fixtures from here
export PYTHONUNBUFFERED=1                   # logs in step with the clock when a step is killed
export TORCH_CUDA_ARCH_LIST=9.0             # H200 only: one architecture to compile
export MAX_JOBS=16                          # the machine's 16 cores for gsplat's nvcc build

step versions 60 setup.log bash -c 'nvidia-smi -L; python3 --version; command -v nvcc ninja; nvcc --version | tail -2
  python3 -c "
import importlib.metadata as md, torch
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())
for d in (\"numpy\", \"transformers\", \"huggingface-hub\", \"safetensors\", \"accelerate\", \"peft\", \"pytest\",
          \"diffusers\", \"gsplat\", \"requests\", \"rich\"):
    try:
        print(d, md.version(d))
    except md.PackageNotFoundError:
        print(d, \"MISSING\")
"'
# Every import the GPU steps make, before any of them runs: a missing wheel shows here in seconds.
step imports 120 setup.log python3 -c '
import diffusers, gsplat, plyfile, rich.console, toml
from diffusers import DDIMScheduler, UNet2DConditionModel
import facelift_lib.calibration, facelift_lib.gslrm.train, facelift_lib.mvdiffusion.pipeline, facelift_lib.render
print("imports ok; diffusers from", diffusers.__file__, "| gsplat from", gsplat.__file__)'

# BENCHMARKS.md "FaceLift size, 6 views at 512², CUDA bf16" is the script's last line; its CPU part comes
# first (smoke train steps, CPU forwards), trimmed here with --steps/--repeats.
step bench_gslrm 150 bench.log python3 benchmarks/bench_gslrm.py --steps 20 --repeats 2
# "FaceLift-size UNet sampling at 512² (sparse vs dense attention)": the CUDA part after the CPU smoke model;
# --repeats 4 gives 2 timed samples per mode on CUDA.
step bench_mvdiffusion 180 bench.log python3 benchmarks/bench_mvdiffusion.py --repeats 4

# gsplat compiles its CUDA kernels on first use; build once here so the tests and render bench time only
# themselves (the build lands in ~/.cache/torch_extensions and is reused within this run).
step gsplat_build 300 setup.log python3 -c '
import time
t = time.perf_counter()
from gsplat.cuda._backend import _C
assert _C is not None, "gsplat: CUDA extension not built (no nvcc/CUDA home?)"
print(f"gsplat JIT build + load: {time.perf_counter() - t:.0f} s")'

# The two files that hold the @pytest.mark.gpu tests: collecting all of tests/ would fail on modules that
# import notebook tools (nbformat, jupytext) the image lacks.
step pytest_gpu 180 tests.log python3 -m pytest -m gpu tests/test_render.py tests/test_facelift_parity.py \
  -q -rA -p no:cacheprovider
step bench_render 120 bench.log python3 benchmarks/bench_render.py --sizes 128 256 512 --repeats 5

{
  echo "gpu_checks summary ($(date -u +%FT%TZ), ${SECONDS}s of the ${DEADLINE}s deadline):"
  printf '  %s\n' "${RESULTS[@]}"
} | tee -a "$OUT/summary.txt"
for r in "${RESULTS[@]}"; do [[ $r == *"rc=0 "* ]] || exit 1; done  # any failure or skip: rc 1
