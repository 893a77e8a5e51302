"""The prepared GPU check (benchmarks/device/): the wheels prepare.sh ships cover what facelift_lib and the GPU
steps import beyond the device image's packages, at pyproject's pins, and the scripts parse. No network."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "benchmarks" / "device"
# Files the GPU run executes besides facelift_lib (gpu_checks.sh names them).
GPU_FILES = ["tests/test_render.py", "tests/test_facelift_parity.py", "benchmarks/bench_render.py",
             "benchmarks/bench_gslrm.py", "benchmarks/bench_mvdiffusion.py"]
# Imported somewhere in facelift_lib but never on the GPU run, so no wheel travels for them.
NOT_ON_DEVICE = {
    "IPython": "notebook display (workbook.py)", "jupytext": "notebook runner", "nbformat": "notebook runner",
    "nbconvert": "notebook runner", "papermill": "notebook runner", "plotly": "viz.py, notebooks only",
    "ipywidgets": "viz.py, notebooks only", "imageio_ffmpeg": "MP4 writer of sequence videos",
    "torchvision": "LPIPS metric only",
}
DISTRIBUTION = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml", "mpl_toolkits": "matplotlib"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    lines = (DEVICE / "image_packages.txt").read_text().splitlines()
    return {norm(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def shipped_wheels() -> dict[str, str]:
    """{distribution: version} of the `name==version` pins in prepare.sh's WHEELS list."""
    text = (DEVICE / "prepare.sh").read_text()
    block = re.search(r"^WHEELS=\((.*?)^\)", text, re.S | re.M).group(1)
    return {norm(n): v for n, v in re.findall(r"^\s*([A-Za-z0-9_.-]+)==(\S+)", block, re.M)}


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-stdlib modules a file imports, at any level (function-level too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    local = {"facelift_lib", "timing", "conftest"} | {p.stem for p in (REPO / "tests").glob("*.py")}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_every_import_of_the_gpu_run_is_in_the_image_or_shipped():
    files = sorted((REPO / "facelift_lib").rglob("*.py")) + [REPO / f for f in GPU_FILES]
    have = image_packages() | set(shipped_wheels())
    missing = {}
    for f in files:
        for name in third_party_imports(f) - set(NOT_ON_DEVICE):
            if norm(DISTRIBUTION.get(name, name)) not in have:
                missing.setdefault(name, []).append(str(f.relative_to(REPO)))
    assert not missing, (f"imported but neither in benchmarks/device/image_packages.txt nor a wheel in prepare.sh "
                         f"(add it to WHEELS, or to NOT_ON_DEVICE here if the GPU run never reaches it): {missing}")


def test_shipped_wheels_use_pyprojects_pins():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", dep).groups()
                for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                if "==" in dep)
    shipped = shipped_wheels()
    assert {"gsplat", "diffusers", "plyfile", "toml"} <= set(shipped), f"prepare.sh ships only {sorted(shipped)}"
    wrong = {name: (v, pins[name]) for name, v in shipped.items() if name in pins and pins[name] != v}
    assert not wrong, f"prepare.sh pin vs pyproject.toml: {wrong}"
    assert not set(shipped) & image_packages(), "a shipped wheel would shadow the image's own package"


def test_gpu_checks_runs_every_file_with_gpu_tests():
    script = (DEVICE / "gpu_checks.sh").read_text()
    gpu_tests = [p for p in sorted((REPO / "tests").glob("test_*.py"))
                 if re.search(r"^@pytest\.mark\.gpu\b", p.read_text(), re.M)]
    assert gpu_tests, "no @pytest.mark.gpu tests found"
    for p in gpu_tests:
        assert f"tests/{p.name}" in script, f"{p.name} has GPU tests that gpu_checks.sh does not run"
    for f in GPU_FILES:
        assert f in script, f"{f} is listed here as part of the GPU run but gpu_checks.sh does not run it"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", ["prepare.sh", "gpu_checks.sh"])
def test_device_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(DEVICE / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
