"""How much Mask IoU a one-pixel boundary error costs at each resolution, on the true masks of unseen test mice.

    .venv/bin/python benchmarks/bench_mask_iou_resolution.py [--n 4] [--model shipped]

For each size: the true mask of each test mouse (all 6 standard views) against the same mask grown by one
pixel (3x3 max-pool). A reconstruction whose silhouettes are one pixel too wide scores this IoU even when
everything else is right: the ceiling a given boundary accuracy puts on Mask IoU, for this thin mouse
(body + tail ~4.5 % of a 64² standard view).

With --model (shipped GS-LRM, or a checkpoint / run folder), also where that model's silhouettes from the 6 true
views of the 16 cached test mice (outputs/mice/64/test_0-15.txt) lose IoU: predicted/true area, the share of the
predicted foreground within 1 px of the true mask, and the share of the true foreground covered.
"""
import argparse

import torch
import torch.nn.functional as F

from facelift_lib.standard_mice import MouseDataConfig, render_mouse, mouse_seeds
from facelift_lib.cameras import standard_cameras
ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=4)
ap.add_argument("--model", default=None)
ap.add_argument("--test-list", default="outputs/mice/64/test_0-15.txt")
args = ap.parse_args()
n = args.n
for size in (64, 128, 256, 512):
    cfg = MouseDataConfig(size=size)
    cams = standard_cameras(cfg.camera_type, size)
    out = []
    for seed in mouse_seeds("test", n):
        m = (render_mouse(seed, cfg, cams)[:, 3:4] > 0.5).float()
        dil = F.max_pool2d(m, 3, 1, 1)
        out.append(float(m.sum() / dil.sum()))
    print(f"{size}²: IoU of the true mask vs the true mask grown by 1 px, mean over {n} test mice x 6 views: "
          f"{sum(out) / len(out):.3f}")

if args.model:
    from facelift_lib.images import on_white
    from facelift_lib.io import load_sample, read_list_file
    from facelift_lib.reconstruct import reconstruct_from_views, rendered_views
    from facelift_lib.weights import load_gslrm

    model = load_gslrm(args.model, args.model)
    ratio, inside, covered = [], [], []
    dirs = read_list_file(args.test_list)
    for d in dirs:
        views, cams = load_sample(d, background=None)
        rec = reconstruct_from_views(on_white(views), cams, model)
        pred = rendered_views(rec.gaussians, rec.cams)[:, 3:4] > 0.5
        true = views[:, 3:4] > 0.5
        near = F.max_pool2d(true.float(), 3, 1, 1) > 0
        ratio.append(float(pred.sum() / true.sum()))
        inside.append(float((pred & near).sum() / pred.sum()))
        covered.append(float((pred & true).sum() / true.sum()))
    k = len(dirs)
    print(f"{args.model}, 6 true views of {k} test mice ({args.test_list}): predicted/true mask area "
          f"{sum(ratio) / k:.2f}; predicted foreground within 1 px of the true mask {sum(inside) / k:.3f}; "
          f"true foreground covered {sum(covered) / k:.3f}")
