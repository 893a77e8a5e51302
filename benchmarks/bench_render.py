"""Render speed: 20k random gaussians (a blob filling the image), forward and backward, per resolution.

    .venv/bin/python benchmarks/bench_render.py [--n 20000] [--sizes 64 128 256] [--repeats 5] [--threads T]

CPU: our pure-torch tile rasteriser (facelift_lib.render, backend="torch"). On CUDA also our torch path
and gsplat. Median of `repeats` runs after one warm-up; backward = .backward() of a sum over all
outputs. "cpu s" is process CPU time (all threads), a steadier figure than wall time on a shared
machine; "peak RSS" is the process high-water mark so far (sizes run in increasing order).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from facelift_lib.cameras import orbit_cameras
from facelift_lib.render import render


def blob_scene(n: int, seed: int = 0, device: str = "cpu") -> list[torch.Tensor]:
    """n gaussians uniform in a unit ball (about the image at distance 2.7 with FaceLift's focal),
    scales 0.01..0.04, opacities 0.2..1, random rotations and colours."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = d * torch.rand(n, 1, generator=g) ** (1 / 3)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = 0.01 + 0.03 * torch.rand(n, 3, generator=g)
    opacities = 0.2 + 0.8 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    return [x.to(device) for x in (means, quats, scales, opacities, colors)]


def time_render(params: list[torch.Tensor], size: int, backend: str, repeats: int) -> dict[str, float]:
    """Median forward/backward wall and CPU seconds of one view at size² (FaceLift intrinsics, resampled)."""
    cams = orbit_cameras([30.0], 20.0, width=512).scaled_to(size)
    K = cams.K
    dev = params[0].device
    vm, Ks = cams.w2c.float().to(dev), K.float().to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    runs: dict[str, list[float]] = {"fwd": [], "bwd": [], "fwd_cpu": [], "bwd_cpu": []}
    for i in range(repeats + 1):
        leaves = [p.detach().clone().requires_grad_(True) for p in params]
        sync(); t0, c0 = time.perf_counter(), time.process_time()
        rgb, alpha, depth = render(*leaves, vm, Ks, size, size, background=torch.ones(3, device=dev),
                                   backend=backend)
        sync(); t1, c1 = time.perf_counter(), time.process_time()
        (rgb.sum() + alpha.sum() + depth.mean()).backward()
        sync(); t2, c2 = time.perf_counter(), time.process_time()
        if i:  # the first run is a warm-up
            for key, value in (("fwd", t1 - t0), ("bwd", t2 - t1), ("fwd_cpu", c1 - c0), ("bwd_cpu", c2 - c1)):
                runs[key].append(value)
    return {key: statistics.median(values) for key, values in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [("torch", "cpu")]
    if torch.cuda.is_available():
        runs += [("torch", "cuda"), ("gsplat", "cuda")]
    print(f"render benchmark: {args.n} gaussians, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"median of {args.repeats} after a warm-up; wall seconds (process CPU seconds)")
    print(f"{'backend':8} {'device':6} {'size':>5} {'forward s':>16} {'backward s':>16} {'peak RSS MB':>12}")
    for backend, device in runs:
        params = blob_scene(args.n, args.seed, device)
        for size in args.sizes:
            t = time_render(params, size, backend, args.repeats)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{backend:8} {device:6} {size:>4}² {t['fwd']:7.3f} ({t['fwd_cpu']:6.3f}) "
                  f"{t['bwd']:7.3f} ({t['bwd_cpu']:6.3f}) {rss:12.0f}")


if __name__ == "__main__":
    main()
