"""Rendering cost of the procedural test/train mice (`facelift_lib.standard_mice`): seconds per mouse
(pose + gaussians + 6 standard views + PNG/JSON write) at each size, into a temporary folder.

    .venv/bin/python benchmarks/bench_standard_mice.py [--n 20] [--sizes 64 128]
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from facelift_lib.standard_mice import MouseDataConfig, render_mice


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            r = render_mice(tmp, "val", args.n, MouseDataConfig(size=size), progress=False)
            cached = render_mice(tmp, "val", args.n, MouseDataConfig(size=size), progress=False)
        print(f"{size}²: {r.seconds / args.n:.3f} s per mouse ({args.n} mice, {r.seconds:.1f} s); "
              f"cached pass {cached.seconds:.2f} s")


if __name__ == "__main__":
    main()
