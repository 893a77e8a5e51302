"""Would a geometric prior tell the diffusion model where the mouse is in the other views? A baseline check.

    .venv/bin/python benchmarks/probe_plane_warp.py [--data outputs/mice/64] [--n 16]

Each test mouse's true view 0 is warped into the 6 standard views through a horizontal plane z = h (the ray of
each target pixel meets the plane, the point is projected into view 0 and its alpha sampled), for a few heights
h (FaceLift units; the trunk centroid is at the origin), and scored as a prediction of each view's silhouette
(Mask IoU at 0.5) beside copying view 0 unchanged (the copy-the-input baseline of eval_mvdiffusion_views.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from facelift_lib.cameras import Cameras, pixel_rays
from facelift_lib.io import load_sample, read_list_file
from facelift_lib.metrics import mask_iou


def plane_warp_grid(cams: Cameras, height: float) -> torch.Tensor:
    """grid_sample grid [V,S,S,2] sampling view 0 at the point where each pixel's ray meets z = height
    (rays that miss it point outside the image)."""
    S = cams.width
    o, d = pixel_rays(cams, dtype=torch.float64)  # [V,S,S,3]
    s = (height - o[..., 2]) / d[..., 2]
    uv, z = cams[0].project((o + d * s[..., None]).reshape(-1, 3))
    grid = (uv[0] / S * 2 - 1).reshape(len(cams), S, S, 2)
    grid[(s <= 0) | (z[0].reshape(len(cams), S, S) <= 0)] = 2.0
    return grid.float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="outputs/mice/64")
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    heights = (-0.1, -0.05, 0.0, 0.05, 0.1)
    scores: dict[str, list[list[float]]] = {}
    for d in read_list_file(Path(args.data) / "test_0-15.txt")[:args.n]:
        views, cams = load_sample(d, background=None)
        alpha = views[:, 3:4].float()  # [V,1,S,S]
        preds = {"copy of view 0": alpha[:1].expand_as(alpha)}
        for h in heights:
            preds[f"plane z = {h:+.2f}"] = F.grid_sample(alpha[:1].expand_as(alpha), plane_warp_grid(cams, h),
                                                         padding_mode="border", align_corners=False)
        for name, p in preds.items():
            scores.setdefault(name, []).append(mask_iou(p, alpha).tolist())
    print(f"silhouette predicted from true view 0, {args.n} test mice ({args.data}): Mask IoU per view")
    print("| prediction | " + " | ".join(f"view {v}" for v in range(6)) + " | views 1–5 mean |")
    print("|---|" + "---|" * 7)
    for name, rows in scores.items():
        m = torch.tensor(rows).mean(0)
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in m.tolist()) + f" | {m[1:].mean():.3f} |")


if __name__ == "__main__":
    main()
