"""Render 3D Gaussians: gsplat on CUDA, a pure-torch tile rasteriser on CPU (tensors in, tensors out).

Both backends follow gsplat 1.5.3's "classic" 3DGS conventions, so a CPU render matches a GPU one:
- covariance R S S^T R^T from wxyz quats (normalised) and linear scales;
- EWA projection with the Jacobian of the pinhole projection evaluated at x/z, y/z clamped to the
  image bounds plus 0.3 of the half field of view on each side; eps2d (0.3 px²) added to the 2D
  covariance diagonal (low-pass filter); pixel centres at +0.5;
- cull: depth outside (near_plane, far_plane), opacity < 1/255, bbox fully outside the image;
  bbox half-size ceil(e * sqrt(cov2d_ii)) with e = min(3.33, sqrt(2 ln(255 opacity))) so that
  every pixel with alpha >= 1/255 lies inside it;
- front-to-back compositing in depth order per 16x16 tile: alpha = min(0.999, o exp(-½ dᵀΣ⁻¹d)),
  gaussians with alpha < 1/255 are skipped, and a pixel stops *before* the gaussian that would
  bring its transmittance to <= 1e-4.
Depth is gsplat's "ED" (expected depth): sum_i w_i z_i / max(sum_i w_i, 1e-10), z = camera-space z.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # imports point down the module map: render knows cameras and gaussians
    from .cameras import Cameras
    from .gaussians import Gaussians

TILE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EXTEND_MAX = 3.33  # gsplat's bbox extent in standard deviations


# --- projection ---------------------------------------------------------------------------------
def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance [N,3,3] = R diag(s²) Rᵀ from wxyz quats [N,4] (any norm) and linear scales [N,3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(quats.shape[:-1] + (3, 3))
    M = R * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor,
                      Ks: Tensor, width: int, height: int, near_plane: float = 0.01, far_plane: float = 1e10,
                      eps2d: float = 0.3) -> dict[str, Tensor]:
    """EWA splatting of N gaussians into C pinhole cameras, gsplat's conventions (see module doc).

    Returns a dict of
      means2d [C,N,2] px, cov2d [C,N,2,2] (eps2d included), conics [C,N,3] (upper triangle of cov2d⁻¹:
      a, b, c with ½(a dx² + c dy²) + b dx dy the Mahalanobis half-distance), depths [C,N] camera z,
      radii [C,N,2] int32 bbox half-size in px (0 where culled; not differentiable).
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]           # [C,N,3]
    cov_c = R[:, None] @ covariance_3d(quats, scales)[None] @ R.transpose(1, 2)[:, None]  # [C,N,3,3]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]                            # [C,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = means_c.unbind(-1)                                              # [C,N]
    # Clamp the point where the Jacobian is taken (not the mean itself) so that gaussians far
    # outside the view do not blow up into huge 2D footprints.
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1)
    J = J.reshape(z.shape + (2, 3))
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)

    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det = a * c - b * b
    conics = torch.stack([c, -b, a], -1) / det.clamp(min=1e-10)[..., None]

    with torch.no_grad():
        opac = opacities.detach().expand_as(z)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=EXTEND_MAX)
        rx = torch.ceil(extend * a.detach().clamp(min=0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp(min=0).sqrt())
        m = means2d.detach()
        valid = ((det.detach() > 0) & (z.detach() > near_plane) & (z.detach() < far_plane)
                 & (opac >= ALPHA_MIN) & ((rx > 0) | (ry > 0))
                 & (m[..., 0] + rx > 0) & (m[..., 0] - rx < width)
                 & (m[..., 1] + ry > 0) & (m[..., 1] - ry < height))
        radii = torch.stack([rx, ry], -1) * valid[..., None]
        radii = torch.nan_to_num(radii, nan=0.0).to(torch.int32)
    return dict(means2d=means2d, cov2d=cov2d, conics=conics, depths=z, radii=radii)


# --- tile binning ---------------------------------------------------------------------------------
@torch.no_grad()
def tile_intersections(means2d: Tensor, radii: Tensor, depths: Tensor, tiles_x: int, tiles_y: int
                       ) -> tuple[Tensor, Tensor]:
    """(camera, gaussian) pairs per tile, front to back.

    means2d [C,N,2], radii [C,N,2] (0 = culled), depths [C,N]. Returns (flat_ids [M] indexing C*N,
    tile_ids [M] indexing C*tiles_y*tiles_x), sorted by tile and, within a tile, by depth.
    """
    C, N = depths.shape
    vis = (radii > 0).all(-1).reshape(-1)
    flat = vis.nonzero()[:, 0]
    m, r = means2d.reshape(-1, 2)[flat], radii.reshape(-1, 2)[flat].to(means2d.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / TILE).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / TILE).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / TILE).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / TILE).clamp(0, tiles_y).long()
    nx = x1 - x0
    counts = nx * (y1 - y0)
    pair_g = torch.repeat_interleave(torch.arange(len(flat)), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum())) - start[pair_g]
    tx = x0[pair_g] + local % nx[pair_g]
    ty = y0[pair_g] + local // nx[pair_g]
    cam = flat[pair_g] // N
    tile = (cam * tiles_y + ty) * tiles_x + tx
    # depth rank within each camera, so one integer key sorts by (tile, depth)
    rank = torch.empty(C * N, dtype=torch.long)
    order = torch.argsort(depths.detach().reshape(C, N), dim=1, stable=True)
    rank.view(C, N).scatter_(1, order, torch.arange(N).expand(C, N).contiguous())
    key = tile * N + rank[flat[pair_g]]
    key, perm = torch.sort(key)
    return flat[pair_g[perm]], tile[perm]


# --- compositing ------------------------------------------------------------------------------
def _composite_tiles(means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor,
                     flat_ids: Tensor, tile_ids: Tensor, n_tiles: int, tiles_x: int, chunk: int = 32
                     ) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing of the binned pairs, tile by tile.

    means2d [G,2], conics [G,3], opacities [G], features [G,F] (flattened camera x gaussian); pairs
    sorted by (tile, depth). Works in rounds of `chunk` gaussians for all unfinished tiles at once:
    [tiles, chunk, 256] tensors, transmittance carried in log space between rounds; a tile drops out
    when all its pixels reached T <= 1e-4 or it has no gaussians left.
    Returns (features [n_tiles,256,F], alpha [n_tiles,256]).
    """
    dtype, device = means2d.dtype, means2d.device
    F = features.shape[-1]
    P = TILE * TILE
    pix = torch.arange(P, device=device)
    off_x = (pix % TILE).to(dtype) + 0.5
    off_y = (pix // TILE).to(dtype) + 0.5
    counts = torch.bincount(tile_ids, minlength=n_tiles)
    starts = torch.cumsum(counts, 0) - counts
    out_f = torch.zeros(n_tiles, P, F, dtype=dtype, device=device)
    out_a = torch.zeros(n_tiles, P, dtype=dtype, device=device)
    logT = torch.zeros(n_tiles, P, dtype=dtype, device=device)
    log_tmin = math.log(T_MIN)
    active = (counts > 0).nonzero()[:, 0]
    r = 0
    while len(active):
        n_left = counts[active] - r * chunk
        j = torch.arange(chunk, device=device)
        real = j[None] < n_left[:, None]                                       # [A,S]
        idx = flat_ids[(starts[active, None] + r * chunk + j[None]).clamp(max=len(flat_ids) - 1)]
        tx = (active % tiles_x).to(dtype) * TILE
        ty = ((active // tiles_x) % (n_tiles // 1)).to(dtype)  # placeholder, fixed below
        ty = ((active // tiles_x)).to(dtype) * TILE  # row index across cameras; rows of a camera repeat
        px = tx[:, None] + off_x[None]                                         # [A,P]
        py = ty[:, None] + off_y[None]
        m = means2d[idx]                                                       # [A,S,2]
        con = conics[idx]
        dx = m[..., 0, None] - px[:, None]                                     # [A,S,P]
        dy = m[..., 1, None] - py[:, None]
        sigma = 0.5 * (con[..., 0, None] * dx * dx + con[..., 2, None] * dy * dy) + con[..., 1, None] * dx * dy
        alpha = (opacities[idx][..., None] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
        keep = (sigma >= 0) & (alpha >= ALPHA_MIN) & real[..., None]
        alpha = torch.where(keep, alpha, torch.zeros((), dtype=dtype, device=device))
        la = torch.log1p(-alpha)
        log_incl = logT[active][:, None] + torch.cumsum(la, 1)                # log T after each gaussian
        weights = alpha * torch.exp(log_incl - la) * (log_incl.detach() > log_tmin)
        out_f = out_f.index_add(0, active, torch.einsum("asp,asf->apf", weights, features[idx]))
        out_a = out_a.index_add(0, active, weights.sum(1))
        logT = logT.index_copy(0, active, log_incl[:, -1])
        r += 1
        unfinished = (logT[active].detach() > log_tmin).any(1) & (counts[active] > r * chunk)
        active = active[unfinished]
    return out_f, out_a
