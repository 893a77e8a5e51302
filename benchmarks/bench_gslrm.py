"""GS-LRM timings.

CPU (always):
  - training step of the notebook-05 smoke model (gslrm.train.SMOKE_MODEL: 128², patch 8, d 128, 4 layers;
    2 rendered views, 10 % of the background gaussians) on a toy mouse dataset (data.write_toy_dataset at the
    model's size, mouse ~5 % of the pixels like the smoke data); the first steps render a dense,
    half-transparent cloud and are slower than later ones, so both phases are reported;
  - forward pass on 6 views at 128² (1,536 tokens) of a mid-size model (d 512, 12 layers, 8 heads, patch 8)
    and of the FaceLift-size model (random weights; peak RSS of the process reported).
CUDA (only when a GPU is present): the FaceLift-size model (random weights) forward on 6 views at 512²
(24,576 tokens), bf16 autocast, time and peak memory (goal <= 0.1 s on an H100; GS-LRM reported 0.23 s on
an A100).

    .venv/bin/python benchmarks/bench_gslrm.py [--steps N] [--repeats R]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timing import time_calls  # benchmarks/timing.py (the script's own folder is on sys.path)

from facelift_lib.cameras import mouse_standard_6view
from facelift_lib.gslrm import GSLRM, GSLRMConfig
from facelift_lib.gslrm.train import SMOKE_MODEL  # notebook 05's `model` default


def _time(fn, repeats: int, sync=lambda: None) -> list[float]:
    return time_calls(fn, repeats, sync)


def bench_train_step(steps: int) -> None:
    from facelift_lib.gslrm.data import write_toy_dataset
    from facelift_lib.gslrm.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        size = SMOKE_MODEL["image_size"]
        lst, _ = write_toy_dataset(Path(tmp) / "toy", n_samples=4, size=size, seed=0, mm_per_unit=117.0)
        cfg = TrainConfig(train_list=str(lst), run_dir=str(Path(tmp) / "run"), image_size=size, model=SMOKE_MODEL,
                          max_steps=steps, warmup_steps=10, lr=1e-3, views_per_step=2,
                          background_gaussian_fraction=0.1, ckpt_every=10**9, progress=False, validate_data=False)
        result = train(cfg)
    t = [r["step_time"] for r in result.log]
    early, late = t[:10], t[len(t) // 2:]
    n_params = GSLRM(GSLRMConfig(**SMOKE_MODEL)).num_parameters() / 1e6
    print(f"smoke model ({n_params:.2f} M params, 5 input views at {size}², torch threads {torch.get_num_threads()}):")
    print(f"  train step, steps 1-10 : median {statistics.median(early):.3f} s (min {min(early):.3f})")
    print(f"  train step, steps {len(t) - len(late) + 1}-{len(t)}: median {statistics.median(late):.3f} s "
          f"(min {min(late):.3f})  <- after the background has turned transparent")


def bench_forward(device: str, cfg: GSLRMConfig, size: int, repeats: int, bf16: bool) -> tuple[list[float], float]:
    torch.manual_seed(0)
    model = GSLRM(cfg).to(device).eval()
    images = torch.rand(1, 6, 3, size, size, device=device)
    cams = [mouse_standard_6view()]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            model(images, cams)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = _time(fwd, repeats, sync)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return times, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps for the smoke step time")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    bench_train_step(args.steps)

    mid = GSLRMConfig(image_size=128, d=512, n_layers=12, n_heads=8)
    t, _ = bench_forward("cpu", mid, 128, args.repeats, bf16=False)
    print(f"mid-size model ({GSLRM(mid).num_parameters() / 1e6:.1f} M params) forward, 6 views at 128², CPU fp32: "
          f"median {statistics.median(t):.3f} s (min {min(t):.3f})")

    full128 = GSLRMConfig(image_size=128)
    t, _ = bench_forward("cpu", full128, 128, max(1, args.repeats - 1), bf16=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"FaceLift size ({GSLRM(full128).num_parameters() / 1e6:.1f} M params) forward, 6 views at 128², CPU fp32: "
          f"median {statistics.median(t):.2f} s (min {min(t):.2f}); peak RSS of this process {rss:.2f} GiB")

    if not torch.cuda.is_available():
        print("FaceLift size (303.6 M params), 6 views at 512², CUDA: skipped (no CUDA device)")
        return
    t, peak = bench_forward("cuda", GSLRMConfig(), 512, max(args.repeats, 10), bf16=True)
    print(f"FaceLift size (303.6 M params) forward, 6 views at 512², {torch.cuda.get_device_name()}, bf16: "
          f"median {statistics.median(t) * 1000:.1f} ms (min {min(t) * 1000:.1f}), peak memory {peak:.2f} GiB")


if __name__ == "__main__":
    main()
