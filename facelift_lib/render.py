"""Render 3D Gaussians: gsplat on CUDA, a pure-torch tile rasteriser on CPU (tensors in, tensors out).

Both backends follow gsplat 1.5.3's "classic" 3DGS conventions, so a CPU render matches a GPU one:
- covariance R S S^T R^T from wxyz quats (normalised) and linear scales;
- EWA projection with the Jacobian of the pinhole projection evaluated at x/z, y/z clamped to the
  image bounds plus 0.3 of the half field of view on each side; eps2d (0.3 px²) added to the 2D
  covariance diagonal (low-pass filter); pixel centres at +0.5;
- cull: depth outside (near_plane, far_plane), opacity < 1/255, bbox fully outside the image;
  bbox half-size ceil(e * sqrt(cov2d_ii)) with e = min(3.33, sqrt(2 ln(255 opacity))) so that
  every pixel with alpha >= 1/255 lies inside it;
- front-to-back compositing in depth order per tile (gsplat 16x16; 8x8 on CPU, where smaller tiles
  waste less work and the result does not depend on it): alpha = min(0.999, o exp(-½ dᵀΣ⁻¹d)),
  gaussians with alpha < 1/255 are skipped, and a pixel stops *before* the gaussian that would
  bring its transmittance to <= 1e-4.
Depth is gsplat's "ED" (expected depth): sum_i w_i z_i / max(sum_i w_i, 1e-10), z = camera-space z.

FaceLift's renderer (graphdeco-inria/diff-gaussian-rasterization) differs in two constants that matter
for render parity: alpha is clamped at 0.99 (not 0.999) and gaussians with camera z <= 0.2 are culled (gsplat:
near_plane 0.01). `render(..., **FACELIFT_RASTER)` uses FaceLift's (near_plane=0.2, alpha_max=0.99); the CPU
backend honours both, gsplat takes near_plane but has 0.999 compiled into its CUDA kernels, so alpha_max
other than 0.999 needs backend="torch". Not matched (documented in DESIGN.md's FaceLift fidelity table):
its radius ceil(3 sigma) vs gsplat's opacity-aware bbox (changes nothing above alpha 1/255), and its colour
clamp max(colour, 0), which gsplat and this renderer do not apply.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .gaussians import Gaussians, quat_to_matrix

if TYPE_CHECKING:  # imports point down the module map: render knows cameras and gaussians
    from .cameras import Cameras

TILE = 16      # gsplat's tile size
CPU_TILE = 8   # our tile size on CPU; results do not depend on it (the bbox culling is exact)
BUDGET = 1 << 21  # elements of one [tiles, chunk, pixels] work tensor on CPU (8 MB in fp32)
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999  # gsplat's alpha clamp (compiled into its CUDA kernels)
# FaceLift's rasteriser conventions, as render() keyword arguments (see the module doc)
FACELIFT_RASTER = {"near_plane": 0.2, "alpha_max": 0.99}
T_MIN = 1e-4
EXTEND_MAX = 3.33  # gsplat's bbox extent in standard deviations


# --- projection ---------------------------------------------------------------------------------
def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance [N,3,3] = R diag(s²) Rᵀ from wxyz quats [N,4] (any norm) and linear scales [N,3]."""
    M = quat_to_matrix(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor | None, viewmats: Tensor,
                      Ks: Tensor, width: int, height: int, near_plane: float = 0.01, far_plane: float = 1e10,
                      eps2d: float = 0.3) -> dict[str, Tensor]:
    """EWA splatting of N gaussians into C pinhole cameras, gsplat's conventions (see module doc).

    Returns a dict of
      means2d [C,N,2] px, cov2d [C,N,2,2] (eps2d included), conics [C,N,3] (upper triangle of cov2d⁻¹:
      a, b, c with ½(a dx² + c dy²) + b dx dy the Mahalanobis half-distance), depths [C,N] camera z,
      radii [C,N,2] int32 bbox half-size in px (0 where culled; not differentiable).
    opacities [N] tighten the bbox and cull gaussians below 1/255 as gsplat's CUDA kernel does;
    None gives gsplat's pure-torch reference behaviour (3.33 sigma, no opacity cull).
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]           # [C,N,3]
    cov_c = R[:, None] @ covariance_3d(quats, scales)[None] @ R.transpose(1, 2)[:, None]  # [C,N,3,3]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]                            # [C,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, depths = means_c.unbind(-1)                                         # [C,N]
    in_depth = (depths > near_plane) & (depths < far_plane)
    # culled gaussians get z = 1 so that nothing behind the camera (z <= 0) puts inf/nan in the graph
    z = torch.where(in_depth, depths, torch.ones_like(depths))
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
        if opacities is None:
            opac, extend = torch.ones_like(z), torch.full_like(z, EXTEND_MAX)
        else:  # opacity-aware bbox: outside it alpha < 1/255 (https://arxiv.org/pdf/2402.00525, B.2)
            opac = opacities.detach().expand_as(z)
            extend = torch.sqrt(2.0 * torch.log(opac.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=EXTEND_MAX)
        rx = torch.ceil(extend * a.detach().clamp(min=0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp(min=0).sqrt())
        m = means2d.detach()
        valid = (in_depth & (det.detach() > 0) & (opac >= ALPHA_MIN) & ((rx > 0) | (ry > 0))
                 & (m[..., 0] + rx > 0) & (m[..., 0] - rx < width)
                 & (m[..., 1] + ry > 0) & (m[..., 1] - ry < height))
        radii = (torch.stack([rx, ry], -1) * valid[..., None]).nan_to_num(0.0).to(torch.int32)
    return dict(means2d=means2d, cov2d=cov2d, conics=conics, depths=depths, radii=radii)


# --- tile binning ---------------------------------------------------------------------------------
@torch.no_grad()
def tile_intersections(means2d: Tensor, radii: Tensor, depths: Tensor, tile: int, tiles_x: int, tiles_y: int
                       ) -> tuple[Tensor, Tensor]:
    """(camera, gaussian) pairs per tile, front to back.

    means2d [C,N,2], radii [C,N,2] (0 = culled), depths [C,N]; tiles of `tile` x `tile` px.
    Returns (flat_ids [M] indexing C*N, tile_ids [M] indexing C*tiles_y*tiles_x camera-major),
    sorted by tile and, within a tile, by depth.
    """
    C, N = depths.shape
    dev = depths.device
    flat = (radii > 0).all(-1).reshape(-1).nonzero()[:, 0]
    m, r = means2d.reshape(-1, 2)[flat], radii.reshape(-1, 2)[flat].to(means2d.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile).clamp(0, tiles_y).long()
    nx = x1 - x0
    counts = nx * (y1 - y0)
    pair_g = torch.repeat_interleave(torch.arange(len(flat), device=dev), counts)
    local = torch.arange(len(pair_g), device=dev) - (torch.cumsum(counts, 0) - counts)[pair_g]
    tx = x0[pair_g] + local % nx[pair_g]
    ty = y0[pair_g] + local // nx[pair_g]
    tile_ids = ((flat[pair_g] // N) * tiles_y + ty) * tiles_x + tx
    # depth rank within each camera, so that one integer key sorts by (tile, depth)
    rank = torch.empty(C * N, dtype=torch.long, device=dev)
    order = torch.argsort(depths.reshape(C, N), dim=1, stable=True)
    rank.view(C, N).scatter_(1, order, torch.arange(N, device=dev).expand(C, N).contiguous())
    _, perm = torch.sort(tile_ids * N + rank[flat[pair_g]])
    return flat[pair_g[perm]], tile_ids[perm]


def tile_exponents(means2d: Tensor, conics: Tensor, opacities: Tensor, tile_ids: Tensor, tile: int,
                   tiles_x: int, tiles_y: int) -> Tensor:
    """Per pair, the coefficients k [M,6] of ln(alpha before clamping) = ln o - ½ dᵀΣ⁻¹d as a quadratic
    in the pixel offset (u, v) from the tile centre: k · (u², v², uv, u, v, 1).

    One matrix product with the [6, tile²] monomials then gives every pixel's exponent. Offsets are
    taken from the tile centre so the terms stay small (fp32 error ~1e-5 on the exponent).
    means2d [M,2], conics [M,3], opacities [M] are the pairs' gaussians (differentiable).
    """
    half = tile / 2
    cx = (tile_ids % tiles_x).to(means2d.dtype) * tile + half
    cy = ((tile_ids // tiles_x) % tiles_y).to(means2d.dtype) * tile + half
    mx, my = means2d[:, 0] - cx, means2d[:, 1] - cy
    a, b, c = conics.unbind(-1)
    return torch.stack([
        -0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx,
        torch.log(opacities) - 0.5 * a * mx * mx - 0.5 * c * my * my - b * mx * my,
    ], -1)


def _monomials(tile: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[6, tile²] (u², v², uv, u, v, 1) of the pixel centres relative to the tile centre, row-major."""
    p = torch.arange(tile * tile, device=device)
    u = (p % tile).to(dtype) + 0.5 - tile / 2
    v = (p // tile).to(dtype) + 0.5 - tile / 2
    return torch.stack([u * u, v * v, u * v, u, v, torch.ones_like(u)])


# --- compositing ------------------------------------------------------------------------------
class _Rounds:
    """How the sorted pairs are walked: rounds of `chunk` gaussians for all unfinished tiles at once."""

    def __init__(self, tile_ids: Tensor, n_tiles: int, pixels: int, budget: int):
        self.counts = torch.bincount(tile_ids, minlength=n_tiles)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.pixels, self.budget = pixels, budget  # budget: elements of one [tiles, chunk, pixels] tensor

    def pairs(self, active: Tensor, pos: int, pad: int) -> tuple[Tensor, int]:
        """Pair ids [A,S] of this round (`pad` for slots past a tile's end) and S: fewer tiles left ->
        longer chunks, same memory."""
        left = self.counts[active] - pos
        S = int(min(int(left.max()), max(8, self.budget // (len(active) * self.pixels))))
        j = torch.arange(S, device=active.device)
        ids = self.starts[active, None] + pos + j[None]
        return torch.where(j[None] < left[:, None], ids, pad), S


def _round_weights(k: Tensor, mono_t: Tensor, T0: Tensor, alpha_max: float = ALPHA_MAX) -> tuple[Tensor, ...]:
    """One round, gaussians along the last dim: exponents k [A,S,6], monomials mono_t [P,6], transmittance
    before the round T0 [A,P].

    Returns raw = o exp(-σ) [A,P,S], alpha (clamped to alpha_max, 0 where below 1/255), 1 - alpha, T before
    each gaussian (0 from where gsplat stops the pixel), T after the round [A,P] over all gaussians (so a
    stopped pixel stays stopped) and the weights w = alpha T.
    """
    raw = torch.matmul(mono_t, k.transpose(1, 2)).exp_()
    alpha = F.threshold(raw.clamp(max=alpha_max), ALPHA_MIN, 0.0)
    one_minus = 1.0 - alpha
    T_after = torch.cumprod(one_minus, -1).mul_(T0[..., None])
    T_last = T_after[..., -1].clone()
    # gsplat stops a pixel *before* the gaussian that would take T to <= 1e-4; T_after is
    # non-increasing, so zeroing T_after <= 1e-4 drops exactly the gaussians from that one on.
    T_before = F.threshold_(T_after, T_MIN, 0.0).div_(one_minus)
    return raw, alpha, one_minus, T_before, T_last, alpha * T_before


class _CompositeTiles(torch.autograd.Function):
    """Front-to-back alpha compositing of depth-sorted (tile, gaussian) pairs, with a hand-written
    backward that recomputes each round, so memory stays O(round) instead of O(pairs x pixels)."""

    @staticmethod
    def forward(ctx, k: Tensor, features: Tensor, tile_ids: Tensor, T_init: Tensor, tile: int, budget: int,
                alpha_max: float = ALPHA_MAX) -> Tensor:
        dtype, device = k.dtype, k.device
        (n_tiles, P), M = T_init.shape, len(k)
        mono_t = _monomials(tile, dtype, device).T.contiguous()
        rounds = _Rounds(tile_ids, n_tiles, P, budget)
        # a padding pair (index M) with exponent -inf never contributes; features get a ones column for alpha
        k_pad = torch.cat([k, k.new_tensor([[0, 0, 0, 0, 0, -math.inf]])])
        f_pad = torch.cat([torch.cat([features, features.new_ones(M, 1)], 1),
                           features.new_zeros(1, features.shape[1] + 1)])
        out = torch.zeros(n_tiles, P, f_pad.shape[1], dtype=dtype, device=device)
        T = T_init.clone()
        plan = []  # (active tiles, first position, T before the round) for the backward pass
        active, pos = (rounds.counts > 0).nonzero()[:, 0], 0
        while len(active):
            ids, S = rounds.pairs(active, pos, M)
            T0 = T[active]
            *_, T_last, w = _round_weights(k_pad[ids], mono_t, T0, alpha_max)
            out[active] += torch.bmm(w, f_pad[ids])
            T[active] = T_last
            plan.append((active, pos, T0))
            pos += S
            active = active[(T_last > T_MIN).any(1) & (rounds.counts[active] > pos)]
        ctx.save_for_backward(k_pad, f_pad)
        ctx.plan, ctx.rounds, ctx.mono_t, ctx.alpha_max = plan, rounds, mono_t, alpha_max
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out: Tensor):
        k_pad, f_pad = ctx.saved_tensors
        rounds, mono_t = ctx.rounds, ctx.mono_t
        M = len(k_pad) - 1
        v_k, v_f = torch.zeros_like(k_pad), torch.zeros_like(f_pad)
        # behind_all[t,p] = sum over the gaussians composited after the current round of w_k (f_k . g)
        behind_all = torch.zeros(g_out.shape[:2], dtype=g_out.dtype, device=g_out.device)
        for active, pos, T0 in reversed(ctx.plan):
            ids, S = rounds.pairs(active, pos, M)
            raw, alpha, one_minus, T_before, _, w = _round_weights(k_pad[ids], mono_t, T0, ctx.alpha_max)
            g = g_out[active]                                                   # [A,P,F+1]
            gk = torch.bmm(g, f_pad[ids].transpose(1, 2))                       # [A,P,S] f_k . g
            csum = torch.cumsum(w * gk, -1)
            total = csum[..., -1]
            behind = (behind_all[active] + total)[..., None].sub(csum)          # sum over k > i
            behind_all[active] += total
            # d out / d alpha_i = T_i g_i - (sum_{k>i} w_k g_k) / (1 - alpha_i); both terms are 0 once stopped
            v_alpha = gk.mul_(T_before).sub_(behind.div_(one_minus))
            # d alpha / d k = alpha * monomial between 1/255 and alpha_max, 0 where clamped or skipped
            v_alpha.mul_(F.threshold_(alpha.neg_(), -ctx.alpha_max, 0.0).neg_())
            v_k[ids] = torch.matmul(mono_t.T, v_alpha).transpose(1, 2)
            v_f[ids] = torch.bmm(w.transpose(1, 2), g)
        return v_k[:M], v_f[:M, :-1], None, None, None, None, None


def composite_tiles(k: Tensor, features: Tensor, tile_ids: Tensor, T_init: Tensor, tile: int,
                    budget: int = BUDGET, alpha_max: float = ALPHA_MAX) -> Tensor:
    """Composite depth-sorted pairs into tiles (differentiable w.r.t. k and features).

    k [M,6] from `tile_exponents`, features [M,F] per pair, tile_ids [M] sorted (by tile, then depth)
    from `tile_intersections`, T_init [n_tiles, tile²] the starting transmittance (1 inside the image,
    0 for padding pixels, which are then skipped). Rounds of [tiles, chunk, tile²] work tensors of at
    most `budget` elements bound the memory; alpha is clamped at `alpha_max`. Returns [n_tiles, tile², F+1] =
    (sum_i w_i f_i, sum_i w_i).
    """
    return _CompositeTiles.apply(k, features, tile_ids, T_init, tile, budget, alpha_max)


def _render_torch(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                  viewmats: Tensor, Ks: Tensor, width: int, height: int, background: Tensor | None,
                  near_plane: float, far_plane: float, eps2d: float, alpha_max: float = ALPHA_MAX,
                  tile: int = CPU_TILE, budget: int = BUDGET) -> tuple[Tensor, Tensor, Tensor]:
    C, N = len(viewmats), len(means)
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                             near_plane, far_plane, eps2d)
    tiles_x, tiles_y = math.ceil(width / tile), math.ceil(height / tile)
    flat_ids, tile_ids = tile_intersections(proj["means2d"].detach(), proj["radii"], proj["depths"].detach(),
                                            tile, tiles_x, tiles_y)
    k = tile_exponents(proj["means2d"].reshape(C * N, 2)[flat_ids], proj["conics"].reshape(C * N, 3)[flat_ids],
                       opacities.repeat(C)[flat_ids], tile_ids, tile, tiles_x, tiles_y)
    # per pair features: rgb and camera z (for the expected depth)
    feats = torch.cat([colors.repeat(C, 1), proj["depths"].reshape(C * N, 1)], -1)[flat_ids]
    inside = torch.zeros(C, tiles_y * tile, tiles_x * tile, dtype=means.dtype, device=means.device)
    inside[:, :height, :width] = 1.0
    T_init = inside.reshape(C, tiles_y, tile, tiles_x, tile).permute(0, 1, 3, 2, 4).reshape(-1, tile * tile)
    out = composite_tiles(k, feats, tile_ids, T_init, tile, budget, alpha_max)
    img = out.reshape(C, tiles_y, tiles_x, tile, tile, -1).permute(0, 1, 3, 2, 4, 5)
    img = img.reshape(C, tiles_y * tile, tiles_x * tile, -1)[:, :height, :width]
    rgb, alpha = img[..., :3], img[..., 4:5]
    depth = img[..., 3:4] / alpha.clamp(min=1e-10)
    if background is not None:
        rgb = rgb + (1 - alpha) * background
    return rgb, alpha, depth


def _render_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                   viewmats: Tensor, Ks: Tensor, width: int, height: int, background: Tensor | None,
                   near_plane: float, far_plane: float, eps2d: float, alpha_max: float = ALPHA_MAX
                   ) -> tuple[Tensor, Tensor, Tensor]:
    from gsplat import rasterization

    if alpha_max != ALPHA_MAX:
        raise ValueError(f"render: gsplat clamps alpha at {ALPHA_MAX} (compiled into its CUDA kernels), "
                         f"alpha_max={alpha_max} was asked; use backend='torch' for another clamp "
                         "(FaceLift's 0.99), or alpha_max=0.999 on gsplat")

    bgs = None if background is None else background.expand(len(viewmats), 3)
    out, alpha, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                  near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=None,
                                  packed=False, tile_size=TILE, backgrounds=bgs, render_mode="RGB+ED",
                                  rasterize_mode="classic")
    return out[..., :3], alpha, out[..., 3:4]


def render(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor,
           Ks: Tensor, width: int, height: int, background: Tensor | None = None, near_plane: float = 0.01,
           far_plane: float = 1e10, eps2d: float = 0.3, backend: str = "auto", alpha_max: float = ALPHA_MAX
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Render N gaussians into C cameras, differentiable w.r.t. all gaussian parameters.

    means [N,3], quats [N,4] wxyz, scales [N,3] linear, opacities [N] in [0,1], colors [N,3] in [0,1]
    (activated values), viewmats [C,4,4] OpenCV world-to-camera, Ks [C,3,3], background [3] or None
    (None = black, i.e. plain premultiplied colour).
    backend: "auto" (gsplat on CUDA tensors, pure torch otherwise), "gsplat" or "torch".
    near_plane: gaussians with camera z <= near_plane are culled (gsplat 0.01; FaceLift 0.2). alpha_max: the
    per-gaussian alpha clamp (gsplat 0.999, the only value its kernels take; FaceLift 0.99, CPU backend).
    `render(..., **FACELIFT_RASTER)` renders with FaceLift's conventions.
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
    skewed = (Ks[:, 0, 1].abs() > 1e-9 * Ks[:, 0, 0].abs()).nonzero().flatten().tolist()
    if skewed:  # gsplat (and this renderer, which matches it) read fx, fy, cx, cy only
        raise ValueError(f"render: camera(s) {skewed} have skew K[0,1] = {[float(Ks[i, 0, 1]) for i in skewed]}; "
                         "gsplat has no skew. Render a skew-free camera (K[0,1] = 0) and resample its image "
                         "exactly (synthetic_rig.render_raw_views does), or use a preprocessed sample's cameras")
    if background is not None:
        background = torch.as_tensor(background, dtype=means.dtype, device=means.device).reshape(3)
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda)
    if use_gsplat and not means.is_cuda:
        raise ValueError("render: backend='gsplat' needs CUDA tensors; move the gaussians and cameras to "
                         "the GPU or use backend='torch'")
    fn = _render_gsplat if use_gsplat else _render_torch
    if not 0 < alpha_max < 1:
        raise ValueError(f"render: alpha_max must be in (0, 1), got {alpha_max}")
    return fn(means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height), background,
              near_plane, far_plane, eps2d, alpha_max)


def render_gaussians(g: "Gaussians", cams: "Cameras", background: Tensor | None = None,
                     width: int | None = None, height: int | None = None, **kwargs
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """`render` for a Gaussians set and a Cameras set; cameras are cast to the gaussians' dtype/device.

    width/height resample the cameras' image size (`Cameras.scaled_to`).
    Extra kwargs go to `render` (near_plane, far_plane, eps2d, backend, alpha_max).
    """
    W, H = width or cams.width, height or cams.height
    K = cams.scaled_to(W, H).K
    dt, dev = g.means.dtype, g.means.device
    return render(g.means, g.quats, g.scales, g.opacities, g.colors, cams.w2c.to(dt).to(dev), K.to(dt).to(dev),
                  W, H, background=background, **kwargs)
