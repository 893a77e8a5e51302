"""How much of the mouse a centred crop of the standard views cuts: the cost of `PixelModelConfig.frame_size`.

    .venv/bin/python benchmarks/bench_frame_crop.py [--data outputs/mice/128] [--n 300]

For crops of side c out of the rendered frame (a model generating the central crop of a frame), the fraction of
each view's alpha outside the crop over n training mice (standard cameras): mean over views, the worst view of a
mouse (median and 99th percentile over mice), and the share of views losing more than 1 %.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from facelift_lib.io import load_sample, read_list_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="outputs/mice/128")
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    dirs = read_list_file(Path(args.data) / "train_0-1199.txt")[:args.n]
    alpha = torch.stack([load_sample(d, background=None)[0][:, 3] for d in dirs])  # [N,V,S,S]
    S = alpha.shape[-1]
    total = alpha.sum((2, 3))
    print(f"{len(dirs)} training mice, {alpha.shape[1]} standard views at {S}²: alpha outside the central crop")
    print("| crop / frame | frame / crop | mean | worst view, median | worst view, p99 | views losing > 1 % |")
    print("|---|---|---|---|---|---|")
    for c in (S // 2, S * 5 // 8, S * 2 // 3, S * 3 // 4, S * 7 // 8):
        lo = (S - c) // 2
        out = (total - alpha[:, :, lo:lo + c, lo:lo + c].sum((2, 3))) / total
        worst = out.amax(1)
        print(f"| {c / S:.3f} | {S / c:.2f} | {out.mean():.4f} | {worst.median():.4f} | {worst.quantile(0.99):.4f} | "
              f"{(out > 0.01).float().mean():.3f} |")


if __name__ == "__main__":
    main()
