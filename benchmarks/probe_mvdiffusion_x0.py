"""What does a diffusion checkpoint predict for each view in ONE step from noise level t (its estimate of the
clean views, x̂0 = E[x0 | x_t, reference])? At high t this is the model's mean guess of each view's silhouette:
a model that knows the geometry draws each view's own mouse; one collapsed onto its input draws the input.

    .venv/bin/python benchmarks/probe_mvdiffusion_x0.py --model shipped --model outputs/recipes/mvdiffusion_demo/run2 \
        [--split val --n 8 --t 999 --t 800 --t 500 --t 200] [--size 128]

Per checkpoint and t: Mask IoU of x̂0's alpha (> 0.5) vs each true view's alpha, mean over views 1–5 (the views
not given), and vs the input view's alpha (how much each predicted view is a copy of the input). Same noise for
every model (seeded). Guidance 1 (the conditional prediction alone). Mice cached under --data, rendered at --size
(default: each model's view size; 128 is what the 96²-frame models trained on, resized), scored at the model's size.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from facelift_lib.io import load_sample
from facelift_lib.metrics import mask_iou
from facelift_lib.standard_mice import MouseDataConfig, render_mice
from facelift_lib.weights import load_mvdiffusion


def view_iou(pred_alpha: torch.Tensor, true_alpha: torch.Tensor) -> torch.Tensor:
    """[V] Mask IoU (`metrics.mask_iou`, alpha > 0.5) per view of alphas [B,V,S,S], mean over the B mice."""
    B, V = pred_alpha.shape[:2]
    return mask_iou(pred_alpha.flatten(0, 1), true_alpha.flatten(0, 1)).view(B, V).nanmean(0)


@torch.no_grad()
def one_step_x0(pipe, truth: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    """truth [B,V,4,S,S] straight RGBA -> x̂0 [B,V,4,S,S] in model space from x_t at level t (same noise per seed)."""
    model, sched = pipe.model, pipe.scheduler
    x0 = model.encode_views(truth)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    tt = torch.full((x0.shape[0],), t, dtype=torch.long)
    ac = sched.alphas_cumprod[t].float()
    x_t = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
    out = model(x_t, tt, model.condition(truth[:, 0]))
    if sched.config.prediction_type == "v_prediction":
        return ac.sqrt() * x_t - (1 - ac).sqrt() * out
    return (x_t - (1 - ac).sqrt() * out) / ac.sqrt()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--t", action="append", type=int, default=[])
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="outputs/mice")
    ap.add_argument("--size", type=int, default=None, help="render the mice at this size (default: the model's)")
    args = ap.parse_args()
    ts = args.t or [999, 800, 500, 200]
    rows = []
    for name in args.model or ["shipped"]:
        pipe = load_mvdiffusion(name, name)
        pipe.model.eval()
        cfg = MouseDataConfig(size=args.size or pipe.model.image_size)
        mice = render_mice(Path(args.data) / cfg.cache_folder, args.split, args.n, cfg, progress=False)
        truth = torch.stack([load_sample(d, background=None)[0] for d in mice.dirs])  # [B,V,4,S,S]
        true_a = pipe.model.decode_views(pipe.model.encode_views(truth))[:, :, 3]  # [B,V,S,S] at the model's size
        for t in ts:
            pred_a = pipe.model.decode_views(one_step_x0(pipe, truth, t, args.seed))[:, :, 3]
            to_truth = view_iou(pred_a, true_a)  # [V]
            to_input = view_iou(pred_a, true_a[:, :1].expand_as(true_a))
            rows.append((name, t, to_truth, to_input))
    print(f"one-step x̂0 at level t, {args.split} mice (n = {args.n}), input view 0, guidance 1, alpha > 0.5; "
          "views 1–5: mean Mask IoU vs their own true view | vs the input view")
    print(f"{'model':<60} {'t':>4}  {'own view':>8}  {'input view':>10}  per view (own)")
    for name, t, a, b in rows:
        print(f"{name[-60:]:<60} {t:>4}  {float(a[1:].mean()):8.3f}  {float(b[1:].mean()):10.3f}  "
              + " ".join(f"{float(x):.2f}" for x in a))


if __name__ == "__main__":
    main()
