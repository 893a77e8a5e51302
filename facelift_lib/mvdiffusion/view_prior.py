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

from ..cameras import Cameras


def alpha_to_bank(alpha: torch.Tensor, size: int) -> torch.Tensor:
    """alpha [M,V,S,S] in [0,1] -> uint8 [M,V,size,size] (area-resized, quantised to 1/255)."""
    M, V = alpha.shape[:2]
    small = F.interpolate(alpha.flatten(0, 1)[:, None].float(), size=(size, size), mode="area")[:, 0]
    return (small * 255).round().clamp(0, 255).to(torch.uint8).view(M, V, size, size)


def mirror_permutation(cams: Cameras) -> list[int]:
    """For a rig symmetric about the vertical plane through camera 0's centre and the world origin: perm with
    view v of the mirrored scene = view perm[v] of the scene, flipped left-right (the standard 6 views: 0 and 3
    stay, 1 <-> 5, 2 <-> 4). A mirrored mouse is as much a mouse, so the bank doubles for free. Checked, not
    assumed: every mirrored, image-flipped camera must be one of the rig's, with its principal point centred."""
    c2w = torch.linalg.inv(cams.w2c)  # [V,4,4]
    d = c2w[0, :2, 3] / c2w[0, :2, 3].norm()  # camera 0's horizontal direction from the origin
    n = torch.tensor([-d[1], d[0], 0.0], dtype=c2w.dtype)  # the mirror plane's normal
    R = torch.eye(4, dtype=c2w.dtype)
    R[:3, :3] -= 2 * torch.outer(n, n)
    flip_x = torch.diag(torch.tensor([-1.0, 1, 1, 1], dtype=c2w.dtype))
    mirrored = R @ c2w @ flip_x  # [V,4,4] where each camera sees the mirrored scene as its image flipped
    perm = []
    for v in range(len(cams)):
        err = (c2w - mirrored[v]).abs().flatten(1).amax(1)  # [V]
        u = int(err.argmin())
        centred = abs(float(cams.K[v, 0, 2]) - cams.width / 2) < 1e-6
        if float(err[u]) > 1e-6 or not centred or not torch.allclose(cams.K[u], cams.K[v]):
            raise ValueError(f"mirror_permutation: camera {v} has no mirror image in this rig (or its principal "
                             "point is off centre): the views of a mirrored mouse are not flipped views of this rig")
        perm.append(u)
    return perm


def mirrored_bank(bank: torch.Tensor, perm: list[int]) -> torch.Tensor:
    """bank [M,V,s,s] -> [M,V,s,s] the mirrored mice: view v is view perm[v] flipped left-right."""
    return bank[:, perm].flip(-1)


def key_iou(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """query [B,s,s], keys [M,s,s] alphas in [0,1] -> [B,M] Mask IoU of (> 0.5) silhouettes (0 when both empty):
    `metrics.mask_iou` for every pair at once, as one matrix product."""
    q = (query > 0.5).flatten(1).float()  # [B,P]
    k = (keys > 0.5).flatten(1).float()  # [M,P]
    inter = q @ k.T
    union = q.sum(1, keepdim=True) + k.sum(1)[None] - inter
    return inter / union.clamp_min(1.0)


def nearest_views(bank: torch.Tensor, query_alpha: torch.Tensor, k: int,
                  mirror_perm: list[int] | None = None) -> torch.Tensor:
    """bank uint8 [M,V,s,s] (view 0 the key), query_alpha [B,S,S] the input view's alpha in [0,1]
    -> [B,V,s,s] mean alpha of the k entries whose view 0 best matches the query (never the query itself).
    mirror_perm (`mirror_permutation`): the bank's mirror images are entries too (2M); a query that is a bank
    entry skips its mirror image as well (a mouse facing the camera is its own mirror image, nearly)."""
    M, V, s = bank.shape[0], bank.shape[1], bank.shape[-1]
    if not 1 <= k < M:
        raise ValueError(f"view prior: k = {k} must be 1..{M - 1} (the bank holds {M} mice)")
    q = alpha_to_bank(query_alpha[:, None], s)[:, 0].float() / 255  # [B,s,s], quantised as the bank is
    q_bin, own_bin = (q > 0.5).flatten(1), (bank[:, 0] > 127).flatten(1)
    itself = (q_bin[:, None] == own_bin[None]).all(-1)  # [B,M] the same silhouette: the query's own entry
    if mirror_perm is not None:
        bank = torch.cat([bank, mirrored_bank(bank, mirror_perm)])
        itself = torch.cat([itself, itself], 1)  # [B,2M] and its mirror image
    iou = key_iou(q, bank[:, 0].float() / 255).masked_fill(itself, -1.0)  # [B,M or 2M]
    idx = iou.topk(k, dim=1).indices  # [B,k]
    return bank[idx].float().div(255).mean(1)  # [B,V,s,s]
