"""benchmarks/compare_training_runs.py: the script the reproduction claims in BENCHMARKS.md rest on says
"bitwise" only when the runs are, and names the first step where they part."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "compare_training_runs.py"


def write_log(path: Path, losses: list[float]) -> Path:
    path.write_text("".join(json.dumps({"step": i + 1, "loss": x, "grad_norm": 1.0, "step_time": 0.1 * (i + 1)}) + "\n"
                            for i, x in enumerate(losses)))
    return path


def compare(*args: str | Path) -> str:
    out = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_compare_training_runs_tells_bitwise_from_close(tmp_path):
    losses = [1.0, 0.8, 0.6, 0.5]
    a = write_log(tmp_path / "a.jsonl", losses)
    run_b = tmp_path / "run_b"
    run_b.mkdir()
    write_log(run_b / "log.jsonl", losses)  # a run folder; only step_time differs (wall clock)
    (run_b / "log.jsonl").write_text((run_b / "log.jsonl").read_text().replace('"step_time": 0.1', '"step_time": 9.9'))
    out = compare(a, run_b, "--window", "2")
    assert "all equal but step_time" in out and "+0.00%" in out

    c = write_log(tmp_path / "c.jsonl", [1.0, 0.8, 0.6 * (1 + 1e-7), 0.5])
    out = compare(a, c, "--window", "2")
    assert "first differ at step 3" in out and "all equal" not in out

    model = {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(3)}
    torch.save({"model": model}, tmp_path / "x.pt")
    torch.save({"model": model}, tmp_path / "y.pt")
    torch.save({"model": {**model, "b": torch.tensor([0.0, 0.25, 0.0])}}, tmp_path / "z.pt")
    assert "all bitwise equal" in compare(a, a, "--weights", tmp_path / "x.pt", tmp_path / "y.pt")
    assert "differ, largest |A-B| 0.25" in compare(a, a, "--weights", tmp_path / "x.pt", tmp_path / "z.pt")


def test_a_diffusion_run_compares_with_its_shipped_file_as_shipped(tiny_mv_checkpoint, tmp_path):
    """A diffusion run folder against the file `weights.ship` made of it: its EMA weights are what was shipped, so
    they compare bitwise; its live weights do not; and its log's wall clock (elapsed_s) is not a difference."""
    from facelift_lib.gslrm.model import read_checkpoint
    from facelift_lib.weights import ship

    ckpt = tiny_mv_checkpoint[0]
    run = ckpt.parent.parent
    shipped = ship("mv", run, weights_dir=tmp_path / "weights", training_command="tests")
    out = compare(run, run, "--weights", run, shipped)
    assert "all bitwise equal" in out and "all equal but step_time, elapsed_s" in out
    live = tmp_path / "live.pt"
    torch.save({"model": read_checkpoint(ckpt)["model"]}, live)
    assert "differ, largest" in compare(run, run, "--weights", live, shipped)

    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("elapsed_s" in r for r in records)
    moved = tmp_path / "moved.jsonl"  # the same run, timed on another machine
    moved.write_text("".join(json.dumps({**r, "elapsed_s": 1e6} if "elapsed_s" in r else r) + "\n" for r in records))
    assert "all equal but" in compare(run, moved)
