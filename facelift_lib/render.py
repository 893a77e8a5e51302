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
    dev = depths.device
    pair_g = torch.repeat_interleave(torch.arange(len(flat), device=dev), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum()), device=dev) - start[pair_g]
    tx = x0[pair_g] + local % nx[pair_g]
    ty = y0[pair_g] + local // nx[pair_g]
    cam = flat[pair_g] // N
    tile = (cam * tiles_y + ty) * tiles_x + tx
    # depth rank within each camera, so one integer key sorts by (tile, depth)
    rank = torch.empty(C * N, dtype=torch.long, device=dev)
    order = torch.argsort(depths.detach().reshape(C, N), dim=1, stable=True)
    rank.view(C, N).scatter_(1, order, torch.arange(N, device=dev).expand(C, N).contiguous())
    key = tile * N + rank[flat[pair_g]]
    key, perm = torch.sort(key)
    return flat[pair_g[perm]], tile[perm]


# --- compositing ------------------------------------------------------------------------------
class _Rounds:
    """How the sorted pairs are walked: rounds of `chunk` gaussians for all unfinished tiles at once."""

    def __init__(self, tile_ids: Tensor, n_tiles: int, budget: int):
        self.counts = torch.bincount(tile_ids, minlength=n_tiles)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.budget = budget  # elements of one [tiles, chunk, pixels] tensor

    def chunk(self, active: Tensor, pos: int) -> int:
        """Gaussians per tile this round: fewer tiles left -> longer chunks, same memory."""
        longest = int(self.counts[active].max()) - pos
        return int(min(longest, max(8, self.budget // (len(active) * TILE * TILE))))


def _pixel_centres(tiles: Tensor, tiles_x: int, tiles_y: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Pixel centres (px, py) [A,256] of global tile ids [A] (camera-major, row-major tiles)."""
    p = torch.arange(TILE * TILE, device=tiles.device)
    px = (tiles % tiles_x)[:, None] * TILE + p % TILE
    py = ((tiles // tiles_x) % tiles_y)[:, None] * TILE + p // TILE
    return px.to(dtype) + 0.5, py.to(dtype) + 0.5


def _round_alphas(means2d: Tensor, conics: Tensor, opacities: Tensor, idx: Tensor, real: Tensor, px: Tensor,
                  py: Tensor, T0: Tensor) -> dict[str, Tensor]:
    """Alphas and transmittances of one round. idx [A,S] gaussian ids, real [A,S] (False = padding),
    px/py [A,P] pixel centres, T0 [A,P] transmittance before the round. All outputs [A,S,P]."""
    m, con = means2d[idx], conics[idx]
    dx = m[..., 0, None] - px[:, None]
    dy = m[..., 1, None] - py[:, None]
    sigma = (0.5 * con[..., 0, None]) * dx * dx
    sigma += (0.5 * con[..., 2, None]) * dy * dy
    sigma += con[..., 1, None] * dx * dy
    gauss = torch.exp(-sigma)
    raw = opacities[idx][..., None] * gauss
    keep = (sigma >= 0) & (raw >= ALPHA_MIN) & real[..., None]
    alpha = torch.where(keep, raw.clamp(max=ALPHA_MAX), 0.0)
    T_incl = torch.cumprod(1 - alpha, 1) * T0[:, None]   # T after each gaussian
    T_excl = T_incl / (1 - alpha)                         # T before it (1 - alpha >= 0.001)
    # gsplat: a pixel stops *before* the gaussian that would take T to <= 1e-4; T_incl is
    # non-increasing, so this keeps exactly that prefix.
    include = T_incl > T_MIN
    return dict(dx=dx, dy=dy, gauss=gauss, alpha=alpha, unclamped=keep & (raw <= ALPHA_MAX),
                T_excl=T_excl, T_last=T_incl[:, -1], include=include)


class _CompositeTiles(torch.autograd.Function):
    """Front-to-back alpha compositing of depth-sorted (tile, gaussian) pairs, with a hand-written
    backward that recomputes each round, so memory stays O(round) instead of O(pairs x pixels)."""

    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, flat_ids: Tensor,
                tile_ids: Tensor, n_tiles: int, tiles_x: int, tiles_y: int, budget: int) -> tuple[Tensor, Tensor]:
        dtype, device = means2d.dtype, means2d.device
        P, F = TILE * TILE, features.shape[-1]
        rounds = _Rounds(tile_ids, n_tiles, budget)
        out_f = torch.zeros(n_tiles, P, F, dtype=dtype, device=device)
        out_a = torch.zeros(n_tiles, P, dtype=dtype, device=device)
        T = torch.ones(n_tiles, P, dtype=dtype, device=device)
        plan = []  # (active tiles, first position, chunk, T before the round) for the backward pass
        active, pos = (rounds.counts > 0).nonzero()[:, 0], 0
        while len(active):
            S = rounds.chunk(active, pos)
            j = torch.arange(S, device=device)
            real = j[None] < (rounds.counts[active] - pos)[:, None]
            idx = flat_ids[(rounds.starts[active, None] + pos + j[None]).clamp(max=len(flat_ids) - 1)]
            px, py = _pixel_centres(active, tiles_x, tiles_y, dtype)
            T0 = T[active]
            r = _round_alphas(means2d, conics, opacities, idx, real, px, py, T0)
            w = r["alpha"] * r["T_excl"] * r["include"]
            out_f[active] += torch.bmm(w.transpose(1, 2), features[idx])
            out_a[active] += w.sum(1)
            T[active] = r["T_last"]
            plan.append((active, pos, S, T0))
            pos += S
            active = active[((T[active] > T_MIN).any(1)) & (rounds.counts[active] > pos)]
        ctx.save_for_backward(means2d, conics, opacities, features, flat_ids, out_f, out_a)
        ctx.plan, ctx.rounds, ctx.grid = plan, rounds, (n_tiles, tiles_x, tiles_y)
        return out_f, out_a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_f: Tensor, g_a: Tensor):
        means2d, conics, opacities, features, flat_ids, out_f, out_a = ctx.saved_tensors
        rounds, (n_tiles, tiles_x, tiles_y) = ctx.rounds, ctx.grid
        dtype, device = means2d.dtype, means2d.device
        G, F, P = len(means2d), features.shape[-1], TILE * TILE
        v_m, v_con = torch.zeros(G, 2, dtype=dtype, device=device), torch.zeros(G, 3, dtype=dtype, device=device)
        v_o, v_f = torch.zeros(G, dtype=dtype, device=device), torch.zeros(G, F, dtype=dtype, device=device)
        # later[t,p] = sum over gaussians behind the current round of w_k (f_k . g_f + g_a)
        later = torch.zeros(n_tiles, P, dtype=dtype, device=device)
        for active, pos, S, T0 in reversed(ctx.plan):
            j = torch.arange(S, device=device)
            real = j[None] < (rounds.counts[active] - pos)[:, None]
            idx = flat_ids[(rounds.starts[active, None] + pos + j[None]).clamp(max=len(flat_ids) - 1)]
            px, py = _pixel_centres(active, tiles_x, tiles_y, dtype)
            r = _round_alphas(means2d, conics, opacities, idx, real, px, py, T0)
            alpha, include = r["alpha"], r["include"]
            w = alpha * r["T_excl"] * include
            gf_t = g_f[active]                                                   # [A,P,F]
            gk = torch.bmm(features[idx], gf_t.transpose(1, 2)) + g_a[active][:, None]  # [A,S,P]
            wg = w * gk
            # sum over k > i of w_k g_k: the rest of this round plus everything behind it
            behind = later[active][:, None] + (wg.sum(1, keepdim=True) - torch.cumsum(wg, 1))
            later[active] += wg.sum(1)
            v_alpha = (r["T_excl"] * gk - behind / (1 - alpha)) * include
            v_raw = v_alpha * r["unclamped"]                # no gradient through the 0.999 clamp
            v_sigma = -v_raw * alpha
            dx, dy = r["dx"], r["dy"]
            con = conics[idx]
            v_o.index_add_(0, idx.reshape(-1), (v_raw * r["gauss"]).sum(-1).reshape(-1))
            v_f.index_add_(0, idx.reshape(-1), torch.bmm(w, gf_t).reshape(-1, F))
            vs_dx, vs_dy = (v_sigma * dx).sum(-1), (v_sigma * dy).sum(-1)          # [A,S]
            v_m.index_add_(0, idx.reshape(-1), torch.stack([
                con[..., 0] * vs_dx + con[..., 1] * vs_dy,
                con[..., 1] * vs_dx + con[..., 2] * vs_dy], -1).reshape(-1, 2))
            v_con.index_add_(0, idx.reshape(-1), torch.stack([
                0.5 * (v_sigma * dx * dx).sum(-1), (v_sigma * dx * dy).sum(-1),
                0.5 * (v_sigma * dy * dy).sum(-1)], -1).reshape(-1, 3))
        return v_m, v_con, v_o, v_f, None, None, None, None, None, None


def composite_tiles(means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, flat_ids: Tensor,
                    tile_ids: Tensor, n_tiles: int, tiles_x: int, tiles_y: int, budget: int = 1 << 21
                    ) -> tuple[Tensor, Tensor]:
    """Composite binned pairs into tiles (differentiable w.r.t. the first four arguments).

    means2d [G,2], conics [G,3], opacities [G], features [G,F] over G = C*N (camera, gaussian) slots;
    flat_ids/tile_ids [M] from `tile_intersections`. Rounds of [tiles, chunk, 256] work tensors of
    at most `budget` elements bound the memory. Returns (features [n_tiles,256,F] = sum_i w_i f_i,
    alpha [n_tiles,256] = sum_i w_i), tiles camera-major, row-major, pixels row-major in a tile.
    """
    return _CompositeTiles.apply(means2d, conics, opacities, features, flat_ids, tile_ids, n_tiles, tiles_x,
                                 tiles_y, budget)


def _render_torch(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                  viewmats: Tensor, Ks: Tensor, width: int, height: int, background: Tensor | None,
                  near_plane: float, far_plane: float, eps2d: float) -> tuple[Tensor, Tensor, Tensor]:
    C, N = len(viewmats), len(means)
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                             near_plane, far_plane, eps2d)
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    n_tiles = C * tiles_y * tiles_x
    flat_ids, tile_ids = tile_intersections(proj["means2d"].detach(), proj["radii"], proj["depths"].detach(),
                                            tiles_x, tiles_y)
    # per (camera, gaussian) features: rgb and camera depth (for ED)
    feats = torch.cat([colors.expand(C, N, 3), proj["depths"][..., None]], -1).reshape(C * N, 4)
    out_f, out_a = composite_tiles(proj["means2d"].reshape(C * N, 2), proj["conics"].reshape(C * N, 3),
                                    opacities.expand(C, N).reshape(C * N), feats, flat_ids, tile_ids,
                                    n_tiles, tiles_x, tiles_y)

    def to_image(x: Tensor) -> Tensor:  # [C*ty*tx, 256, F] -> [C,H,W,F]
        x = x.reshape(C, tiles_y, tiles_x, TILE, TILE, -1).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(C, tiles_y * TILE, tiles_x * TILE, -1)[:, :height, :width]

    feat_img, alpha = to_image(out_f), to_image(out_a[..., None])
    rgb, depth = feat_img[..., :3], feat_img[..., 3:4] / alpha.clamp(min=1e-10)
    if background is not None:
        rgb = rgb + (1 - alpha) * background
    return rgb, alpha, depth


def _render_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                   viewmats: Tensor, Ks: Tensor, width: int, height: int, background: Tensor | None,
                   near_plane: float, far_plane: float, eps2d: float) -> tuple[Tensor, Tensor, Tensor]:
    from gsplat import rasterization

    bgs = None if background is None else background.expand(len(viewmats), 3)
    out, alpha, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                  near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=None,
                                  packed=False, tile_size=TILE, backgrounds=bgs, render_mode="RGB+ED",
                                  rasterize_mode="classic")
    return out[..., :3], alpha, out[..., 3:4]


def render(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor,
           Ks: Tensor, width: int, height: int, background: Tensor | None = None, near_plane: float = 0.01,
           far_plane: float = 1e10, eps2d: float = 0.3, backend: str = "auto"
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Render N gaussians into C cameras, differentiable w.r.t. all gaussian parameters.

    means [N,3], quats [N,4] wxyz, scales [N,3] linear, opacities [N] in [0,1], colors [N,3] in [0,1]
    (activated values), viewmats [C,4,4] OpenCV world-to-camera, Ks [C,3,3], background [3] or None
    (None = black, i.e. plain premultiplied colour).
    backend: "auto" (gsplat on CUDA tensors, pure torch otherwise), "gsplat" or "torch".
    Returns rgb [C,H,W,3] = sum_i w_i c_i + (1 - alpha) background, alpha [C,H,W,1] = sum_i w_i, and
    depth [C,H,W,1] = gsplat's "ED" expected camera z, sum_i w_i z_i / max(alpha, 1e-10) (0 where empty).
    """
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"render: backend must be 'auto', 'gsplat' or 'torch', got {backend!r}")
    N = means.shape[0]
    for name, x, shape in (("means", means, (N, 3)), ("quats", quats, (N, 4)), ("scales", scales, (N, 3)),
                           ("opacities", opacities, (N,)), ("colors", colors, (N, 3))):
        if tuple(x.shape) != shape:
            raise ValueError(f"render: {name} must be {list(shape)}, got {list(x.shape)} "
                             "(unbatched gaussians; loop over a batch or use Gaussians[b])")
    C = viewmats.shape[0]
    if tuple(viewmats.shape) != (C, 4, 4) or tuple(Ks.shape) != (C, 3, 3):
        raise ValueError(f"render: viewmats must be [C,4,4] and Ks [C,3,3], got {list(viewmats.shape)} "
                         f"and {list(Ks.shape)}")
    if background is not None:
        background = torch.as_tensor(background, dtype=means.dtype, device=means.device).reshape(3)
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda)
    if use_gsplat and not means.is_cuda:
        raise ValueError("render: backend='gsplat' needs CUDA tensors; move the gaussians and cameras to "
                         "the GPU or use backend='torch'")
    fn = _render_gsplat if use_gsplat else _render_torch
    return fn(means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height), background,
              near_plane, far_plane, eps2d)


def render_gaussians(g: "Gaussians", cams: "Cameras", background: Tensor | None = None,
                     width: int | None = None, height: int | None = None, **kwargs
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """`render` for a Gaussians set and a Cameras set; cameras are cast to the gaussians' dtype/device.

    width/height resample the cameras' image size (K scaled by width/cams.width, height/cams.height).
    Extra kwargs go to `render` (near_plane, far_plane, eps2d, backend).
    """
    W, H = width or cams.width, height or cams.height
    K = cams.K.clone()
    K[:, 0] *= W / cams.width
    K[:, 1] *= H / cams.height
    dt, dev = g.means.dtype, g.means.device
    return render(g.means, g.quats, g.scales, g.opacities, g.colors, cams.w2c.to(dt).to(dev), K.to(dt).to(dev),
                  W, H, background=background, **kwargs)
