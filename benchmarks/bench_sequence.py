"""Frames per second of notebook 07's whole frame loop (facelift_lib.sequence), and where a frame's time goes.

A synthetic sequence rig (notebook 07's smoke defaults: 288x256 images, 4000 gaussians, trajectory seed 1) is
built once into --work (reused if there), then:
  1. `run_sequence` from an empty output folder, `--workers` processes x `--threads` torch threads: frames per
     second of the whole loop, model loading and process start-up included (what a user waits for);
  2. the same frames once more in this process with `process_frame(..., timings=...)`: the mean seconds per
     frame of each stage (read + preprocess, GS-LRM 5 views, render + score, GS-LRM 6 views, filter + PLY +
     readouts, panel + JSON), the model already loaded, and the process's resident memory after a quarter of the
     frames and after all of them (the loop streams: it should not grow).
GS-LRM is the 05 smoke model: a trained checkpoint with --checkpoint (a ckpt_*.pt or run folder), else the same
architecture with random weights (same cost per frame up to the number of gaussians the filters keep).

    .venv/bin/python benchmarks/bench_sequence.py [--frames 48] [--workers 1] [--threads 1] [--device cpu]
        [--checkpoint PATH]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from facelift_lib.gslrm import GSLRM, GSLRMConfig
from facelift_lib.gslrm.train import SMOKE_MODEL  # notebook 05's `model` default
from facelift_lib.synthetic_rig import ensure_rig
from facelift_lib.sequence import (SequenceConfig, make_context, prepare_output, process_frame, run_sequence,
                                   torch_threads)



def current_rss_mib() -> float:
    """Resident set size of this process now (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return float("nan")


def smoke_checkpoint(folder: Path) -> Path:
    """A random-weight checkpoint of the 05 smoke architecture (load_trained_model reads it)."""
    torch.manual_seed(0)
    cfg = GSLRMConfig(**SMOKE_MODEL)
    path = folder / "ckpt_0000000000000000.pt"
    torch.save({"model": GSLRM(cfg).state_dict(), "model_config": cfg.to_dict()}, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device of the loop (cuda on the GPU box)")
    ap.add_argument("--checkpoint", default=None, help="GS-LRM ckpt_*.pt or run folder (default: random smoke model)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench_sequence"))
    args = ap.parse_args()

    work = Path(args.work)
    t0 = time.perf_counter()
    rig = ensure_rig(work / "rig", n_frames=args.frames, seed=1, image_scale=0.25, n_gaussians=4000)
    print(f"rig: {args.frames} frames at {work / 'rig'} ({time.perf_counter() - t0:.1f} s, 0 if reused)")
    ckpt = Path(args.checkpoint) if args.checkpoint else smoke_checkpoint(work)
    out = work / "sequence"
    shutil.rmtree(out, ignore_errors=True)
    cfg = SequenceConfig(rig_dir=str(rig), out_dir=str(out), checkpoint=str(ckpt), threads=args.threads,
                         device=args.device)

    stats = run_sequence(cfg, workers=args.workers, progress=False)
    print(f"whole loop: {stats.processed} frames in {stats.seconds:.1f} s with {args.workers} worker(s) x "
          f"{args.threads} thread(s): {stats.fps:.2f} frames/s (model loading and process start-up included)")

    shutil.rmtree(out)
    prepare_output(cfg)
    timings: dict[str, float] = {}
    with torch_threads(args.threads):
        ctx = make_context(cfg)
        per_frame, rss = [], {}
        for f in range(args.frames):
            t = time.perf_counter()
            process_frame(ctx, f, timings)
            per_frame.append(time.perf_counter() - t)
            if f + 1 in (args.frames // 4, args.frames):
                rss[f + 1] = current_rss_mib()
    n = args.frames
    print(f"per frame, model loaded, one process x {args.threads} thread(s): median {statistics.median(per_frame):.3f} s "
          f"({1 / statistics.median(per_frame):.2f} frames/s)")
    for stage, seconds in timings.items():
        print(f"  {stage:<26} {seconds / n * 1000:7.1f} ms  ({seconds / sum(timings.values()):.0%})")
    print("resident memory of this process after " + ", ".join(f"{k} frames: {v:.0f} MiB" for k, v in rss.items())
          + " (streaming: it should not grow with the frames)")


if __name__ == "__main__":
    main()
