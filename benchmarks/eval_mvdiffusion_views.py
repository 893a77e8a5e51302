"""Generated views vs true views on unseen procedural test mice, per view, for one or more diffusion models.

    .venv/bin/python benchmarks/eval_mvdiffusion_views.py --model shipped --model untrained [--n 16] [--start 0]
        [--steps 20] [--guidance 2.0] [--eta 0.0] [--strength 1.0] [--size S] [--score-size S]

`shipped` is weights/mvdiffusion_demo.pt; `untrained` a freshly initialised model of the shipped (or first)
config; `copy-input` the baseline a model must beat: every view is the input view itself (a collapsed model
scores about this); anything else a checkpoint or run folder of `mvdiffusion.train`. Each mouse's true view 0 is the input;
all 6 generated views are compared with the true ones (masks: the true alpha; Mask IoU of the alphas at 0.5;
white background). Mice are seeds start..start+n-1 of the test (or --split val) range (cached under --data),
rendered at --size (default: the first model's view size), which every model reads (resized to its own size);
generated and true views are compared at --score-size (default --size), so models of different sizes meet under
one protocol (06 scores at the GS-LRM's 128²).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from facelift_lib.images import on_white, resize_images, resize_rgba
from facelift_lib.io import load_sample
from facelift_lib.mvdiffusion.pipeline import MVDiffusionPipeline
from facelift_lib.mvdiffusion.train import view_quality
from facelift_lib.standard_mice import MouseDataConfig, render_mice
from facelift_lib.weights import load_mvdiffusion


def load(name: str, like: MVDiffusionPipeline | None) -> MVDiffusionPipeline:
    if name == "untrained":
        torch.manual_seed(0)
        return MVDiffusionPipeline(model=like.model.untrained_like(), scheduler=like.scheduler,
                                   camera_type=like.camera_type)
    return load_mvdiffusion(name, name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--eta", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strength", type=float, default=1.0,
                    help="< 1: start from the retrieval prior's views noised this far (sample_views' strength)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"],
                    help="val: for choosing sampler settings; train: the training mice (fit vs generalisation)")
    ap.add_argument("--data", default="outputs/benchmarks/test_mice")
    ap.add_argument("--size", type=int, default=None, help="render / input size (default: the first model's)")
    ap.add_argument("--score-size", type=int, action="append", default=[],
                    help="scoring size (default: --size); repeat for one table per size from the same samples")
    args = ap.parse_args()
    names = args.model or ["shipped", "untrained", "copy-input"]
    first_name = next((n for n in names if n not in ("untrained", "copy-input")), "shipped")
    first = load(first_name, None)
    size = args.size or first.model.image_size
    scores = args.score_size or [size]
    cfg = MouseDataConfig(size=size)
    mice = render_mice(Path(args.data) / cfg.cache_folder, args.split, args.n, cfg, start=args.start, progress=False)
    truth = torch.stack([load_sample(d, background=None)[0] for d in mice.dirs])  # [B,6,4,S,S] straight RGBA
    B, V = truth.shape[:2]
    generated = {}
    for name in names:
        if name == "copy-input":
            generated[name] = on_white(truth[:, :1]).expand_as(truth)
        else:
            pipe = first if name == first_name else load(name, first)
            generated[name] = pipe(truth[:, 0], args.steps, args.guidance, seed=args.seed, progress=False, eta=args.eta,
                                   strength=args.strength)

    for score in scores:
        target = on_white(resize_rgba(truth.flatten(0, 1), score)).view(B, V, 4, score, score)
        rows = {}
        for name, gen in generated.items():
            gen = resize_images(gen.flatten(0, 1), score).view(B, V, 4, score, score)  # on white: a linear resize
            q = view_quality(gen, target)
            for metric in ("mask_iou", "psnr_masked"):
                rows[(name, metric)] = q[metric]
        table = pd.DataFrame(rows).T
        table.columns = [f"view {v}" for v in table.columns]
        table["mean"], table["min"] = table.mean(axis=1), table.min(axis=1)
        print(f"generated vs true views: {args.split} mice {mice.dirs[0].name}.. (n = {len(mice.dirs)}), input view 0, "
              f"{args.steps} DDIM steps, guidance {args.guidance}, eta {args.eta}, strength {args.strength}, input {size}², scored at {score}², "
              "white bg, masks: true alpha")
        print(table.round(3).to_string())


if __name__ == "__main__":
    main()
