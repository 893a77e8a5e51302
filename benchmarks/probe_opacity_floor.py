"""Would dropping the faint gaussians help? The shipped GS-LRM leaves ~97k of its ~98k gaussians a mouse on the
background pixels, nearly transparent; together they lay a faint haze (and the odd dark speck) over the white
background of every render. This probe zeroes the opacity of every gaussian below a floor, after the model, and
scores the renders as the view-count table does (all 6 views, masks the true alpha, white, the model's size).

    .venv/bin/python benchmarks/probe_opacity_floor.py [--split test] [--n 16] [--k 6 --k 3]
        [--floor 0 --floor 0.01 --floor 0.02 --floor 0.05 --floor 0.1]

Prints, per k views read and floor, the means over the mice of masked PSNR, Mask IoU and chamfer (mm, centres of
opacity >= 0.05 against the true ones, `reconstruct.center_distances`).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd
import torch

from facelift_lib.images import on_white
from facelift_lib.io import load_sample
from facelift_lib.reconstruct import reconstruct_from_views, reconstruction_report, spread_views
from facelift_lib.standard_mice import MouseDataConfig, render_mice, sample_mouse_ground_truth
from facelift_lib.weights import load_shipped


def with_opacity_floor(rec, floor: float):
    """The reconstruction with every gaussian of opacity < floor made fully transparent."""
    g = rec.gaussians
    return dataclasses.replace(rec, gaussians=dataclasses.replace(
        g, opacities=torch.where(g.opacities >= floor, g.opacities, torch.zeros_like(g.opacities))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--k", type=int, action="append")
    ap.add_argument("--floor", type=float, action="append")
    ap.add_argument("--data", default="outputs/mice")
    args = ap.parse_args()
    ks, floors = args.k or [6, 3], args.floor or [0.0, 0.01, 0.02, 0.05, 0.1]
    model = load_shipped()
    size = model.config.image_size
    mice = render_mice(Path(args.data) / str(size), args.split, args.n, MouseDataConfig(size=size))
    rows = []
    for d in mice.dirs:
        views, cams = load_sample(d, background=None)  # straight RGBA: the truth
        gt, units_per_mm = sample_mouse_ground_truth(d)
        for k in ks:
            inp = spread_views(len(cams), k)
            rec = reconstruct_from_views(on_white(views[inp].float()), cams[inp], model)
            rec.cams = cams.scaled_to(size, size)  # score at all the sample's views
            for floor in floors:
                _, s = reconstruction_report(with_opacity_floor(rec, floor), views, gt.means, 1 / units_per_mm)
                rows.append({"k": k, "floor": floor, "psnr_masked": s["psnr_masked"], "mask_iou": s["mask_iou"],
                             "chamfer_mm": s["chamfer_mm"]})
    table = pd.DataFrame(rows).groupby(["k", "floor"]).mean()
    print(f"shipped GS-LRM, {args.split} mice (n = {len(mice.dirs)}), k true views read, scored at all views, "
          f"masks: true alpha, white, {size}²; gaussians below the floor made transparent")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
