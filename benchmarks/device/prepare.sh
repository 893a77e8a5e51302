#!/usr/bin/env bash
# Prepare the GPU check HERE (needs the package registry; no GPU): fills .device/ in the repo root with
#   .device/whl/                          wheels the device image lacks (it cannot fetch anything itself)
#   .device/shared/facelift_reference/    the part of the FaceLift fixtures the GPU tests read
# then prints the sizes and the run-tool arguments. Usage: bash benchmarks/device/prepare.sh
# The device side is benchmarks/device/gpu_checks.sh.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python  # any pip works: the flags below pick the device's wheels
grep -qxF '.device/' .gitignore || { echo "add .device/ to .gitignore first (else it travels twice)" >&2; exit 1; }

# What the GPU run imports and the image (benchmarks/device/image_packages.txt) lacks. Pins: pyproject.toml
# where it pins, else the version the CPU venv runs. Found by tracing imports on the GPU path, not by
# dependency metadata: install is --no-deps, so declared-but-unimported needs (gsplat's jaxtyping, rich's
# markdown-it-py, diffusers' importlib_metadata) stay out.
WHEELS=(
  gsplat==1.5.3             # render(backend="gsplat"); py3-none-any, JIT-builds its CUDA kernels with nvcc
  rich==15.0.0              # gsplat.cuda._backend imports rich.console for its build messages
  diffusers==0.42.1         # mvdiffusion (UNet, schedulers)
  requests==2.34.2          # `import diffusers` imports requests (diffusers/utils/loading_utils.py) ...
  urllib3==2.8.0            # ... which imports urllib3, idna and certifi,
  idna==3.20
  certifi==2026.10.19.post1
  charset-normalizer==3.5.3 # and this one if present (it warns without it)
  plyfile==1.1.5            # gaussians.save_ply / gslrm.export
  toml==0.10.2              # facelift_lib.calibration imports it at module level
)

rm -rf .device/whl  # one version of each: start from nothing
mkdir -p .device/whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .device/whl "${WHEELS[@]}"

# gsplat's wheel carries GLM's HTML/PDF manual and test suite (5.5 MB of its 6.5 MB); its JIT build needs
# only GLM's headers (third_party/glm/glm). Drop both folders and their RECORD lines so the transfer fits.
"$PY" - .device/whl/gsplat-*.whl <<'PY'
import os, sys, zipfile
path, drop = sys.argv[1], ("gsplat/cuda/csrc/third_party/glm/doc/", "gsplat/cuda/csrc/third_party/glm/test/")
with zipfile.ZipFile(path) as src, zipfile.ZipFile(path + ".slim", "w") as dst:
    for item in src.infolist():
        if item.filename.startswith(drop):
            continue
        data = src.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(True) if not line.decode().startswith(drop))
        dst.writestr(item, data)  # keeps each entry's compression
os.replace(path + ".slim", path)
PY

# The GPU tests read only parity/ (test_facelift_parity.py); the whole folder (28 MB, mostly human_sample/)
# would push the transfer past 64 MiB next to the 45 MB tracked tree (weights/ is tracked).
SRC=${FACELIFT_SHARED:-$REPO/../shared}/facelift_reference
DST=.device/shared/facelift_reference
[[ -d $SRC/parity ]] || { echo "no FaceLift reference at $SRC (set FACELIFT_SHARED)" >&2; exit 1; }
rm -rf .device/shared
mkdir -p "$DST"
cp -R "$SRC/README.md" "$SRC/parity" "$DST/"
chmod -R u+w .device/shared  # the source is read-only; keep reruns able to delete the copy

# Everything that travels: tracked + untracked-not-ignored files + the carried .device.
bytes() { du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1; }
tracked=$(git ls-files -z | bytes)
untracked=$(git ls-files -z --others --exclude-standard | bytes)
device=$(du -sb .device | cut -f1)
total=$((tracked + ${untracked:-0} + device))
limit=$((64 * 1024 * 1024))
ls -1 .device/whl
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
echo "tracked $(mb "$tracked"), untracked $(mb "${untracked:-0}"), .device $(mb "$device"):" \
  "total $(mb "$total") of the 64 MiB ($(mb "$limit")) limit"
if ((total > limit)); then echo "TOO BIG for the transfer" >&2; exit 1; fi
echo 'run tool: command "bash benchmarks/device/gpu_checks.sh", carry [".device"], timeout_s 540'
