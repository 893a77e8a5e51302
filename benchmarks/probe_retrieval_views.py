"""How well can ANY predictor that sees only the input view draw the other views' silhouettes, given the training
mice? A non-parametric answer: for each test mouse, find the training mice whose input view (view 0) silhouette is
most like its own (Mask IoU) and predict views 1–5 as theirs.

    .venv/bin/python benchmarks/probe_retrieval_views.py [--n-train 1200] [--n 16] [--split test] [--size 128]
        [--k 1 --k 8 --k 32] [--mirror]

Rows (all Mask IoU of alpha > 0.5 against each view's own true alpha, the diffusion eval's protocol; 128² renders
of `facelift_lib.standard_mice` from `outputs/mice`):
- copy of the input view: what a model collapsed onto its input scores;
- nearest k by view 0: the mean alpha of the k training mice whose view 0 best matches (> 0.5), per view;
- oracle: the ONE training mouse whose views 1–5 match best (it looks at the answer): how close the training set
  comes to each test mouse at all, an upper bound for retrieval with this many mice.
A model that learned the data's mapping from view 0 to the other views should reach about the nearest-k rows; the
gap between them and the oracle is what the input view leaves undetermined (or the retrieval's crude distance).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from facelift_lib.io import load_sample
from facelift_lib.metrics import mask_iou
from facelift_lib.mvdiffusion.view_prior import key_iou, mirror_permutation, mirrored_bank
from facelift_lib.standard_mice import MouseDataConfig, render_mice


def load_alphas(dirs: list[Path], progress: bool) -> torch.Tensor:
    """-> [N,V,S,S] straight alpha of every view of every mouse folder."""
    return torch.stack([load_sample(d, background=None)[0][:, 3] for d in tqdm(dirs, disable=not progress,
                                                                                    desc="alphas", leave=False)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--data", default="outputs/mice")
    ap.add_argument("--k", type=int, action="append", default=[])
    ap.add_argument("--mirror", action="store_true", help="add each training mouse's mirror image to the bank")
    args = ap.parse_args()
    ks = args.k or [1, 8, 32]
    cfg = MouseDataConfig(size=args.size)
    root = Path(args.data) / cfg.cache_folder
    t0 = time.perf_counter()
    train = render_mice(root, "train", args.n_train, cfg, progress=False)
    bank = load_alphas(train.dirs, True)  # [M,V,S,S]
    if args.mirror:  # the mirrored mice: twice the bank, no rendering
        bank = torch.cat([bank, mirrored_bank(bank, mirror_permutation(load_sample(train.dirs[0])[1]))])
    test = load_alphas(render_mice(root, args.split, args.n, cfg, progress=False).dirs, False)  # [N,V,S,S]
    V = bank.shape[1]
    rows: dict[str, list[torch.Tensor]] = {"copy of the input view": []}
    rows.update({f"nearest {k} by view 0": [] for k in ks})
    rows["oracle: best training mouse on views 1–5"] = []
    for mouse in test:
        rows["copy of the input view"].append(mask_iou(mouse[:1].expand(V, -1, -1), mouse))
        order = key_iou(mouse[None, 0], bank[:, 0])[0].argsort(descending=True)
        for k in ks:
            pred = bank[order[:k]].mean(0)  # [V,S,S] the k neighbours' mean alpha
            rows[f"nearest {k} by view 0"].append(mask_iou(pred, mouse))
        per_view = torch.stack([key_iou(mouse[None, v], bank[:, v])[0] for v in range(V)], 1)  # [M,V]
        best = per_view[:, 1:].nanmean(1).argmax()
        rows["oracle: best training mouse on views 1–5"].append(per_view[best])
    print(f"{args.split} mice n = {len(test)}, {args.size}², against {len(bank)} training mice"
          f"{' (half of them mirror images)' * args.mirror} "
          f"({time.perf_counter() - t0:.0f} s); Mask IoU (alpha > 0.5) vs each view's own true alpha")
    print(f"| prediction from view 0 | " + " | ".join(f"view {v}" for v in range(V)) + " | views 1–5 mean | worst view |")
    print("|---" * (V + 3) + "|")
    for name, ious in rows.items():
        m = torch.stack(ious).nanmean(0)  # [V]
        print(f"| {name} | " + " | ".join(f"{float(x):.3f}" for x in m)
              + f" | {float(m[1:].mean()):.3f} | {float(m[1:].min()):.3f} |")


if __name__ == "__main__":
    main()
