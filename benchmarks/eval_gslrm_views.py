"""GS-LRM from k = 1..6 true views on unseen procedural test mice (`reconstruct.view_count_table`), for one or
more models, and optionally the curve over a training run's checkpoints (k = 6, validation mice).

    .venv/bin/python benchmarks/eval_gslrm_views.py --model shipped --model <ckpt or run> [--n 16] [--start 0]
    .venv/bin/python benchmarks/eval_gslrm_views.py --curve outputs/recipes/gslrm_demo/run [--every 2] [--n 8]
    .venv/bin/python benchmarks/eval_gslrm_views.py --model shipped --geometry      # + the 3D mouse from 6 views
    .venv/bin/python benchmarks/eval_gslrm_views.py --model shipped --cameras mouse_rig_6view  # the rig's directions
    .venv/bin/python benchmarks/eval_gslrm_views.py --model shipped --split train  # mice it trained on (the gap)
    .venv/bin/python benchmarks/eval_gslrm_views.py --model shipped --model <128² run> --score-size 128  # one resolution

`--geometry` adds, per model, the 3D mouse from the 6 true views against the true gaussian centres (mm):
accuracy / completeness (`reconstruct.center_distances`, opacity >= 0.05), the opaque gaussians farther
than --far_mm from every true centre (floaters), and masked PSNR / Mask IoU at the 6 views with and without
those floaters (made transparent): what the floaters add to or take from the image scores.

`shipped` is the demo's GS-LRM (weights.DEFAULT_SHIPPED: weights/gslrm_demo_128.pt since 2026-12-03; before, and in
BENCHMARKS' older commands, weights/gslrm_demo.pt); any other manifest name loads that shipped file (`gslrm_demo`);
`untrained` a freshly initialised model of the shipped (or first) config.
Test mice (or --split val / train) are seeds start..start+n-1 of that split's range (cached under --data/<size>,
or --data/<size>_<cameras> for a camera set other than the standard one: `--cameras mouse_rig_6view` renders the
same mice at the virtual rig's viewing directions, the cameras 05's preprocessed frames have).
`--score-size S` scores renders at S² against the true views at S² (the gaussians are resolution-free), so models
trained at different resolutions land under one protocol; without it each model is scored at its own size. The
mice come from the cache at the larger of S and the model's size, so a model only ever reads views downsampled to
its size, never upsampled.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from facelift_lib.gslrm.model import GSLRM
from facelift_lib.gslrm.train import load_trained_model
from facelift_lib.gaussians import Gaussians
from facelift_lib.images import on_white
from facelift_lib.io import load_sample
from facelift_lib.reconstruct import (nearest_distances, center_distances, reconstruct_from_views, rendered_views,
                                     view_count_table, view_quality)
from facelift_lib.standard_mice import MouseDataConfig, render_mice, sample_mouse_ground_truth
from facelift_lib.training import list_checkpoints
from facelift_lib.weights import DEFAULT_SHIPPED, load_shipped, read_manifest

COLUMNS = ["psnr_masked", "mask_iou", "ssim_masked", "psnr_full", "heldout_psnr_masked", "heldout_mask_iou"]


def load(name: str, like: GSLRM | None) -> GSLRM:
    if name == "shipped" or name in read_manifest():
        return load_shipped(DEFAULT_SHIPPED["gslrm"] if name == "shipped" else name)
    if name == "untrained":
        torch.manual_seed(0)
        return GSLRM(like.config).eval()
    return load_trained_model(name)


@torch.no_grad()
def geometry_table(model: GSLRM, sample_dirs, far_mm: float, min_opacity: float = 0.05) -> pd.DataFrame:
    """Per mouse: the 3D mouse from its 6 true views against the true gaussian centres, in mm."""
    rows = []
    for d in sample_dirs:
        views, cams = load_sample(d, background=None)
        g = reconstruct_from_views(on_white(views.float()), cams, model).gaussians
        gt, units_per_mm = sample_mouse_ground_truth(d)
        dist = center_distances(g, gt.means, min_opacity)
        far = nearest_distances(g.means.reshape(-1, 3).float(), gt.means.reshape(-1, 3).float()).view(g.opacities.shape) \
            / units_per_mm > far_mm  # [1,N]
        without_far = Gaussians(means=g.means, quats=g.quats, scales=g.scales, colors=g.colors,
                                opacities=g.opacities.masked_fill(far, 0.0))
        target = on_white(views.float())
        q, q_clean = (view_quality(rendered_views(x, cams), target) for x in (g, without_far))
        rows.append({"sample": Path(d).name, "accuracy_mm": dist["accuracy"] / units_per_mm,
                     "completeness_mm": dist["completeness"] / units_per_mm, "n_opaque": dist["n_pred"],
                     f"n_far_{far_mm:g}mm": int((far & (g.opacities >= min_opacity)).sum()),
                     "psnr_masked": q["psnr_masked"].mean(), "mask_iou": q["mask_iou"].mean(),
                     "psnr_masked_no_far": q_clean["psnr_masked"].mean(), "mask_iou_no_far": q_clean["mask_iou"].mean()})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--curve", default=None, help="a run folder: k = 6 on validation mice for every checkpoint")
    ap.add_argument("--every", type=int, default=1, help="--curve: every Nth checkpoint (the last always)")
    ap.add_argument("--split", default="test", choices=["test", "val", "train"],
                    help="whose mice (train: the first --n training mice, to measure the generalisation gap)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--data", default="outputs/mice")
    ap.add_argument("--geometry", action="store_true", help="also the 3D mouse from 6 views vs the truth (mm)")
    ap.add_argument("--far_mm", type=float, default=20.0, help="--geometry: a floater is this far from the truth")
    ap.add_argument("--cameras", default=MouseDataConfig.camera_type, help="camera spec the test mice are rendered at")
    ap.add_argument("--score-size", type=int, default=None,
                    help="score every model at this resolution (default: each model's own)")
    args = ap.parse_args()
    pd.set_option("display.width", 200)
    first = None
    for name in args.model:
        model = load(name, first)
        first = first or model
        size = args.score_size or model.config.image_size
        cfg = MouseDataConfig(size=max(size, model.config.image_size), camera_type=args.cameras)
        mice = render_mice(Path(args.data) / cfg.cache_folder, args.split, args.n, cfg, start=args.start,
                           progress=False)
        table, _, _ = view_count_table(model, mice.dirs, split=args.split, score_size=size)
        print(f"\n{name}: {table.attrs['protocol']}")
        print(table[COLUMNS + ["input_views"]].to_string(float_format=lambda x: f"{x:.2f}"))
        if args.geometry:
            geo = geometry_table(model, mice.dirs, args.far_mm)
            print(f"{name}: 3D from the 6 true views vs the true centres, opacity >= 0.05 (n {len(geo)})")
            print(geo.drop(columns="sample").describe().loc[["mean", "50%", "max"]].to_string(
                float_format=lambda x: f"{x:.2f}"))
    if args.curve:
        rows = []
        ckpts = list_checkpoints(args.curve)
        for ckpt in ckpts[args.every - 1::args.every] + ([ckpts[-1]] if len(ckpts) % args.every else []):
            model = load_trained_model(ckpt)
            mice = render_mice(Path(args.data) / str(model.config.image_size), "val", args.n,
                               MouseDataConfig(size=model.config.image_size), progress=False)
            table, _, _ = view_count_table(model, mice.dirs, ks=[6], split="val")
            rows.append({"checkpoint": ckpt.name, **{c: float(table.loc[6, c]) for c in ("psnr_masked", "mask_iou")}})
            print(rows[-1], flush=True)
        print(pd.DataFrame(rows).to_string(float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
