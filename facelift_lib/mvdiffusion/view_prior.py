"""A retrieval prior for the small pixel model: each view's silhouette as the training mice that looked alike.

Why: from the input view alone, the mean silhouette of the 8 training mice whose input view matches best draws the
other views at Mask IoU 0.68 on unseen mice, where the diffusion model trained on the same 1200 mice reached 0.45
(`benchmarks/probe_retrieval_views.py`, BENCHMARKS). The data determines the novel views far better than the model
learns to; the pixel-aligned reference only fits view 0. So the model is given, per view and pixel-aligned, the
retrieved mean alpha of that view, and learns to refine it (a semi-parametric diffusion model, as in retrieval-
augmented image synthesis).

The bank is the training mice's alphas at `size`² of the UNet's crop, uint8 [M,V,s,s], saved in the model's
state dict (so a shipped file carries its own bank). A query never retrieves itself: an entry whose input-view
key equals the query's exactly is skipped, so training sees what an unseen mouse sees (leave-one-out).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def alpha_to_bank(alpha: torch.Tensor, size: int) -> torch.Tensor:
    """alpha [M,V,S,S] in [0,1] -> uint8 [M,V,size,size] (area-resized, quantised to 1/255)."""
    M, V = alpha.shape[:2]
    small = F.interpolate(alpha.flatten(0, 1)[:, None].float(), size=(size, size), mode="area")[:, 0]
    return (small * 255).round().clamp(0, 255).to(torch.uint8).view(M, V, size, size)


def key_iou(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """query [B,s,s], keys [M,s,s] alphas in [0,1] -> [B,M] Mask IoU of (> 0.5) silhouettes (0 when both empty):
    `metrics.mask_iou` for every pair at once, as one matrix product."""
    q = (query > 0.5).flatten(1).float()  # [B,P]
    k = (keys > 0.5).flatten(1).float()  # [M,P]
    inter = q @ k.T
    union = q.sum(1, keepdim=True) + k.sum(1)[None] - inter
    return inter / union.clamp_min(1.0)


def nearest_views(bank: torch.Tensor, query_alpha: torch.Tensor, k: int) -> torch.Tensor:
    """bank uint8 [M,V,s,s] (view 0 the key), query_alpha [B,S,S] the input view's alpha in [0,1]
    -> [B,V,s,s] mean alpha of the k entries whose view 0 best matches the query (never the query itself)."""
    M, V, s = bank.shape[0], bank.shape[1], bank.shape[-1]
    if not 1 <= k < M:
        raise ValueError(f"view prior: k = {k} must be 1..{M - 1} (the bank holds {M} mice)")
    q = alpha_to_bank(query_alpha[:, None], s)[:, 0].float() / 255  # [B,s,s], quantised as the bank is
    keys = bank[:, 0].float() / 255
    iou = key_iou(q, keys)  # [B,M]
    q_bin, k_bin = (q > 0.5).flatten(1), (keys > 0.5).flatten(1)
    itself = (q_bin[:, None] == k_bin[None]).all(-1)  # [B,M] the same silhouette: the query's own entry
    iou = iou.masked_fill(itself, -1.0)
    idx = iou.topk(k, dim=1).indices  # [B,k]
    return bank[idx].float().div(255).mean(1)  # [B,V,s,s]
