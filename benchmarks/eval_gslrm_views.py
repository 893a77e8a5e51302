"""GS-LRM from k = 1..6 true views on unseen procedural test mice (`reconstruct.view_count_table`), for one or
more models, and optionally the curve over a training run's checkpoints (k = 6, validation mice).

    .venv/bin/python benchmarks/eval_gslrm_views.py --model shipped --model <ckpt or run> [--n 16] [--start 0]
    .venv/bin/python benchmarks/eval_gslrm_views.py --curve outputs/recipes/gslrm_demo/run [--every 2] [--n 8]

`shipped` is weights/gslrm_demo.pt; `untrained` a freshly initialised model of the shipped (or first) config.
Test mice are seeds start..start+n-1 of the test range (cached under --data).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from facelift_lib.gslrm.model import GSLRM
from facelift_lib.gslrm.train import load_trained_model
from facelift_lib.reconstruct import view_count_table
from facelift_lib.standard_mice import MouseDataConfig, render_mice
from facelift_lib.training import list_checkpoints
from facelift_lib.weights import load_shipped

COLUMNS = ["psnr_masked", "mask_iou", "ssim_masked", "psnr_full", "heldout_psnr_masked", "heldout_mask_iou"]


def load(name: str, like: GSLRM | None) -> GSLRM:
    if name == "shipped":
        return load_shipped("gslrm_demo")
    if name == "untrained":
        torch.manual_seed(0)
        return GSLRM(like.config).eval()
    return load_trained_model(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--curve", default=None, help="a run folder: k = 6 on validation mice for every checkpoint")
    ap.add_argument("--every", type=int, default=1, help="--curve: every Nth checkpoint (the last always)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--data", default="outputs/mice")
    args = ap.parse_args()
    pd.set_option("display.width", 200)
    first = None
    for name in args.model:
        model = load(name, first)
        first = first or model
        mice = render_mice(Path(args.data) / str(model.config.image_size), "test", args.n,
                           MouseDataConfig(size=model.config.image_size), start=args.start, progress=False)
        table, _, _ = view_count_table(model, mice.dirs, split="test")
        print(f"\n{name}: {table.attrs['protocol']}")
        print(table[COLUMNS + ["input_views"]].to_string(float_format=lambda x: f"{x:.2f}"))
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
