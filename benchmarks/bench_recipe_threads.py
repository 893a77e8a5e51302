"""Step time of a GS-LRM or diffusion recipe on 1 vs 2 torch threads (is the demo recipe faster with both cores
than with one core a model, side by side?).

Runs the recipe's first `--steps` steps once per thread count, each in its own process with OMP_NUM_THREADS set,
in a temporary run folder (the recipe's data, model and init; nothing of the recipe's own run is touched), and
prints the median step time over the steps after the first 10 (the first GS-LRM steps render a denser cloud): the
GS-LRM trainer logs each step's step_time, the diffusion trainer elapsed_s every 10 steps (their differences / 10).
Run it on a quiet machine: the ratio is the figure, measured in one run.

    .venv/bin/python benchmarks/bench_recipe_threads.py weights/recipes/gslrm_demo_128.phase2.yaml --steps 100 \
        --init-from weights/gslrm_demo_128.pt
    .venv/bin/python benchmarks/bench_recipe_threads.py weights/recipes/mvdiffusion_demo.yaml --steps 100
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from facelift_lib.training import read_log

REPO = Path(__file__).resolve().parents[1]


def recipe_step_times(recipe: Path, steps: int, threads: int, init_from: str | None, tmp: Path) -> list[float]:
    """Seconds per step of the first `steps` steps of `recipe` trained with `threads` torch threads (the GS-LRM's
    logged step_time; for a diffusion recipe each logged interval's mean, once per step in it)."""
    cfg = yaml.safe_load(recipe.read_text())
    run_dir = tmp / f"threads{threads}"
    diffusion = "pixel_model" in cfg
    trainer = ["facelift_lib.mvdiffusion.train", "--recipe"] if diffusion else ["facelift_lib.gslrm.train"]
    # max_steps shortens the schedule, which does not change the cost of a step; no checkpoints or validation
    never = dict(checkpoint_every=10**9, val_every=10**9) if diffusion else dict(ckpt_every=10**9)
    cfg.update(run_dir=str(run_dir), max_steps=steps, resume=None, overwrite=True, progress=False, **never)
    if init_from is not None:
        cfg["init_from"] = init_from
    short = tmp / f"recipe_threads{threads}.yaml"
    short.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", *trainer, str(short)], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log = read_log(run_dir)
    if not diffusion:
        return [r["step_time"] for r in log if "step_time" in r]
    marks = [(r["step"], r["elapsed_s"]) for r in log if "elapsed_s" in r and not r.get("skipped")]
    return [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(marks, marks[1:]) for _ in range(s1 - s0)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--init-from", default=None, help="start from this file instead of the recipe's init_from")
    args = ap.parse_args()
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.threads:
            times = recipe_step_times(args.recipe, args.steps, n, args.init_from, Path(tmp))
            medians[n] = statistics.median(times[10:])
            print(f"{args.recipe.name}: {n} thread(s): median {medians[n]:.3f} s/step over steps 11-{len(times)} "
                  f"(min {min(times[10:]):.3f}, max {max(times[10:]):.3f})")
    base = medians[args.threads[0]]
    for n in args.threads[1:]:
        print(f"speed-up {args.threads[0]} -> {n} threads: {base / medians[n]:.2f}x")


if __name__ == "__main__":
    main()
