"""The renderer against independent references: a plain per-pixel compositor, gsplat's own pure-torch
projection, numerical gradients, and (on a GPU box) gsplat's CUDA rasteriser."""
from __future__ import annotations

import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

from facelift_lib.cameras import Cameras, orbit_cameras
from facelift_lib.gaussians import Gaussians
from facelift_lib.render import FACELIFT_RASTER, _render_torch, project_gaussians, render, render_gaussians

W, H = 32, 24


def small_cameras(width: int = W, height: int = H) -> Cameras:
    """Two cameras 2.7 from the origin, 70° apart, a unit blob roughly filling the image."""
    return orbit_cameras([0.0, 70.0], 20.0, distance=2.7, fx=40.0 * width / W, width=width, height=height)


def random_scene(n: int, seed: int, dense: bool = False, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """means, quats, scales, opacities, colors; `dense` = large opaque gaussians (pixels saturate)."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * (0.6 if dense else 1.2)
    quats = torch.randn(n, 4, generator=g)
    scales = (torch.rand(n, 3, generator=g) * 0.08 + 0.01) * (3.0 if dense else 1.0)
    opacities = (0.85 + 0.15 * torch.rand(n, generator=g)) if dense else (0.05 + 0.9 * torch.rand(n, generator=g))
    colors = torch.rand(n, 3, generator=g)
    return [x.to(dtype) for x in (means, quats, scales, opacities, colors)]


def brute_force(means, quats, scales, opacities, colors, viewmats, Ks, width, height, background=None,
                alpha_max=0.999):
    """Every visible gaussian at every pixel, in depth order, with gsplat's per-pixel rules written out
    plainly; projection from gsplat's own pure-torch reference. Returns (rgb, alpha, depth, n_stopped)."""
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmats, Ks, width, height, 0.3)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype) + 0.5,
                            torch.arange(width, dtype=means.dtype) + 0.5, indexing="ij")
    rgbs, alphas, dsums, n_stopped = [], [], [], 0
    for c in range(len(viewmats)):
        T = torch.ones(height, width, dtype=means.dtype)
        rgb = torch.zeros(height, width, 3, dtype=means.dtype)
        dsum = torch.zeros(height, width, dtype=means.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        for i in torch.argsort(depths[c]).tolist():
            if (radii[c, i] <= 0).any() or opacities[i] < 1 / 255:
                continue
            dx, dy = means2d[c, i, 0] - xs, means2d[c, i, 1] - ys
            a, b, cc = conics[c, i]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp(opacities[i] * torch.exp(-sigma), max=alpha_max)
            use = (sigma >= 0) & (alpha >= 1 / 255) & ~done
            stop = use & (T * (1 - alpha) <= 1e-4)  # the pixel ends before this gaussian
            done = done | stop
            use = use & ~stop
            w = torch.where(use, alpha * T, torch.zeros_like(alpha))
            rgb = rgb + w[..., None] * colors[i]
            dsum = dsum + w * depths[c, i]
            T = torch.where(use, T * (1 - alpha), T)
        n_stopped += int(done.sum())
        acc = 1 - T
        if background is not None:
            rgb = rgb + T[..., None] * background
        rgbs.append(rgb), alphas.append(acc[..., None]), dsums.append((dsum / acc.clamp(min=1e-10))[..., None])
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(dsums), n_stopped


@pytest.mark.parametrize("seed,dense", [(0, False), (1, False), (2, True)])
def test_cpu_render_matches_brute_force(seed, dense):
    cams = small_cameras()
    vm, Ks = cams.w2c.float(), cams.K.float()
    scene = random_scene(50, seed, dense)
    rgb, alpha, depth = render(*scene, vm, Ks, W, H)
    ref_rgb, ref_alpha, ref_depth, n_stopped = brute_force(*scene, vm, Ks, W, H)
    assert rgb.shape == (2, H, W, 3) and alpha.shape == depth.shape == (2, H, W, 1)
    assert ref_alpha.max() > 0.5, "test scene does not cover the image"
    if dense:
        assert n_stopped > 20, "dense scene never reaches the T <= 1e-4 stop; the stop rule goes untested"
    assert (rgb - ref_rgb).abs().max() <= 1e-3
    assert (alpha - ref_alpha).abs().max() <= 1e-3
    covered = ref_alpha > 0.05
    assert (depth - ref_depth)[covered].abs().max() <= 1e-3 * ref_depth[covered].max()


def test_facelift_alpha_clamp_matches_brute_force():
    """alpha_max=0.99 (FaceLift's rasteriser) on a dense scene whose opaque centres hit the clamp."""
    cams = small_cameras()
    vm, Ks = cams.w2c.float(), cams.K.float()
    scene = random_scene(50, 2, dense=True)
    scene[3] = torch.ones_like(scene[3])  # opacity 1: every centre is clamped
    rgb, alpha, _ = render(*scene, vm, Ks, W, H, alpha_max=0.99)
    ref_rgb, ref_alpha, _, _ = brute_force(*scene, vm, Ks, W, H, alpha_max=0.99)
    gsplat_like, _, _ = render(*scene, vm, Ks, W, H)
    assert (rgb - ref_rgb).abs().max() <= 1e-3 and (alpha - ref_alpha).abs().max() <= 1e-3
    assert (rgb - gsplat_like).abs().max() > 1e-3  # the clamp changes the image


def test_near_plane_culls_as_facelift():
    """FaceLift culls camera z <= 0.2: with FACELIFT_RASTER a gaussian at z 0.15 vanishes, one at 0.3 stays."""
    cams = orbit_cameras([0.0], 0.0, distance=2.7, fx=40.0, width=W, height=H)
    forward = -cams.centers[0].float() / cams.centers[0].norm().float()  # camera looks at the origin
    means = torch.stack([cams.centers[0].float() + z * forward for z in (0.15, 0.3)])
    scene = [means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.01), torch.full((2,), 0.9),
             torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])]
    vm, Ks = cams.w2c.float(), cams.K.float()
    _, alpha_far_only, _ = render(*[x[1:] for x in scene], vm, Ks, W, H, **FACELIFT_RASTER)
    _, alpha, _ = render(*scene, vm, Ks, W, H, **FACELIFT_RASTER)
    _, alpha_gsplat, _ = render(*scene, vm, Ks, W, H)
    assert float(alpha_far_only.max()) > 0.1  # the z = 0.3 gaussian is in view
    assert torch.equal(alpha, alpha_far_only)  # the z = 0.15 one is culled
    assert float(alpha_gsplat.sum()) > float(alpha.sum()) + 1  # gsplat's near plane 0.01 keeps it


def test_tile_size_and_chunking_do_not_change_the_image():
    """Tiles of 4/8/16 px and tiny work budgets (many rounds, transmittance carried between them)."""
    cams = small_cameras(40, 36)
    scene = random_scene(60, 3, dense=True)
    args = (*scene, cams.w2c.float(), cams.K.float(), 40, 36, None, 0.01, 1e10, 0.3)
    ref = _render_torch(*args, tile=16, budget=1 << 22)
    for tile, budget in ((4, 1 << 22), (8, 2048), (16, 4096)):
        out = _render_torch(*args, tile=tile, budget=budget)
        for x, y in zip(out, ref):
            assert (x - y).abs().max() <= 1e-4, (tile, budget)


def test_projection_matches_gsplat_reference():
    """means2d, cov2d, conics, depths, radii vs gsplat's _fully_fused_projection, including gaussians
    outside the field of view (Jacobian clamping) and behind the camera (culled)."""
    cams = small_cameras()
    vm, Ks = cams.w2c.float(), cams.K.float()
    means, quats, scales, opacities, _ = random_scene(200, 4)
    means = means * 4  # many far outside the image, some behind the cameras (distance 2.7)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, vm, Ks, W, H, 0.3)
    ours = project_gaussians(means, quats, scales, None, vm, Ks, W, H)
    vis = (radii > 0).all(-1)
    assert 10 < vis.sum() < vis.numel() - 10 and (depths < 0).any()
    assert torch.equal(ours["radii"], radii)
    assert (ours["means2d"] - means2d)[vis].abs().max() <= 1e-4
    assert torch.allclose(ours["depths"], depths, atol=1e-5)
    assert torch.allclose(ours["conics"][vis], conics[vis], rtol=1e-4, atol=1e-6)
    cov_ref = torch.linalg.inv(torch.stack([conics[..., 0], conics[..., 1], conics[..., 1], conics[..., 2]],
                                           -1).reshape(conics.shape[:-1] + (2, 2))[vis])
    assert torch.allclose(ours["cov2d"][vis], cov_ref, rtol=1e-3, atol=1e-4)
    # with opacities: gsplat CUDA's tighter bbox, never larger, and faint gaussians culled
    with_o = project_gaussians(means, quats, scales, opacities, vm, Ks, W, H)["radii"]
    assert (with_o <= radii).all() and (with_o < radii).any()


def test_gradients_match_numerical():
    """gradcheck (float64) of rgb, alpha and depth w.r.t. every gaussian parameter on a tiny scene."""
    cams = orbit_cameras([0.0, 70.0], 20.0, distance=2.7, fx=14.0, width=12, height=10)
    scene = [x.requires_grad_(True) for x in random_scene(6, 5, dtype=torch.float64)]
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)

    def f(*params):
        return render(*params, cams.w2c, cams.K, 12, 10, background=bg)

    assert torch.autograd.gradcheck(f, scene, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("alpha_max", [0.999, 0.99])
def test_gradients_match_autograd_of_brute_force(alpha_max):
    """Our hand-written compositing backward vs autograd through the plain compositor, 50 gaussians,
    dense enough that pixels stop (the stop rule is part of the backward too); gsplat's and FaceLift's clamp."""
    cams = small_cameras()
    vm, Ks = cams.w2c, cams.K
    ours = [x.requires_grad_(True) for x in random_scene(50, 6, dense=True, dtype=torch.float64)]
    ref = [x.detach().clone().requires_grad_(True) for x in ours]
    g = torch.Generator().manual_seed(7)
    w_rgb, w_a, w_d = (torch.rand(2, H, W, k, generator=g, dtype=torch.float64) for k in (3, 1, 1))
    rgb, alpha, depth = render(*ours, vm, Ks, W, H, alpha_max=alpha_max)
    (rgb * w_rgb).sum().add((alpha * w_a).sum()).add((depth * w_d).sum()).backward()
    rgb, alpha, depth, n_stopped = brute_force(*ref, vm, Ks, W, H, alpha_max=alpha_max)
    (rgb * w_rgb).sum().add((alpha * w_a).sum()).add((depth * w_d).sum()).backward()
    assert n_stopped > 0
    for name, a, b in zip(["means", "quats", "scales", "opacities", "colors"], ours, ref):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6 * b.grad.abs().max()), name


def test_background_is_composited_under_the_gaussians():
    cams = small_cameras()
    vm, Ks = cams.w2c.float(), cams.K.float()
    scene = random_scene(50, 8)
    bg = torch.tensor([0.2, 0.5, 1.0])
    rgb0, alpha0, depth0 = render(*scene, vm, Ks, W, H)
    rgb1, alpha1, depth1 = render(*scene, vm, Ks, W, H, background=bg)
    assert 0.05 < alpha0.mean() < 0.95
    assert torch.allclose(rgb1, rgb0 + (1 - alpha0) * bg, atol=1e-6)
    assert torch.equal(alpha0, alpha1) and torch.equal(depth0, depth1)
    # nothing in view (all behind the cameras): background everywhere, alpha and depth 0
    behind = scene.copy()
    behind[0] = 1.5 * cams.centers[0].float() + 0.05 * scene[0]  # 1.35 behind camera 0
    rgb, alpha, depth = render(*behind, vm[:1], Ks[:1], W, H, background=bg)
    assert torch.equal(rgb, bg.expand_as(rgb)) and alpha.abs().max() == 0 and depth.abs().max() == 0


def test_render_gaussians_casts_cameras_and_scales_intrinsics():
    cams = small_cameras()
    g = Gaussians(*random_scene(50, 9))
    rgb, alpha, _ = render_gaussians(g, cams, width=2 * W, height=2 * H)
    assert rgb.dtype == torch.float32 and rgb.shape == (2, 2 * H, 2 * W, 3)
    K2 = cams.K.clone()
    K2[:, :2] *= 2
    ref, ref_alpha, _ = render(g.means, g.quats, g.scales, g.opacities, g.colors, cams.w2c.float(), K2.float(),
                               2 * W, 2 * H)
    assert torch.allclose(rgb, ref, atol=1e-6) and torch.allclose(alpha, ref_alpha, atol=1e-6)
    # the same scene at half resolution has (about) the same coverage
    _, alpha_lo, _ = render_gaussians(g, cams)
    assert abs(alpha_lo.mean() - alpha.mean()) < 0.05


def test_bad_inputs_raise():
    cams = small_cameras()
    scene = random_scene(5, 0)
    with pytest.raises(ValueError, match="colors"):
        render(*scene[:4], scene[4][:, :2], cams.w2c.float(), cams.K.float(), W, H)
    with pytest.raises(ValueError, match="CUDA"):
        render(*scene, cams.w2c.float(), cams.K.float(), W, H, backend="gsplat")


@pytest.mark.gpu
def test_gpu_torch_backend_matches_gsplat():
    """Our pure-torch path on CUDA vs gsplat.rasterization: images and gradients."""
    cams = small_cameras(128, 96)
    vm, Ks = cams.w2c.float().cuda(), cams.K.float().cuda()
    scene = [x.cuda() for x in random_scene(2000, 10)]
    bg = torch.tensor([0.3, 0.3, 0.3], device="cuda")
    outs, grads = [], []
    for backend in ("torch", "gsplat"):
        leaves = [x.clone().requires_grad_(True) for x in scene]
        rgb, alpha, depth = render(*leaves, vm, Ks, 128, 96, background=bg, backend=backend)
        (rgb.sum() + alpha.sum() + depth.mean()).backward()
        outs.append((rgb, alpha, depth))
        grads.append([x.grad for x in leaves])
    (rgb_t, a_t, d_t), (rgb_g, a_g, d_g) = outs
    assert (rgb_t - rgb_g).abs().max() <= 1e-3 and (a_t - a_g).abs().max() <= 1e-3
    covered = a_g > 0.05
    assert (d_t - d_g)[covered].abs().max() <= 1e-3 * d_g[covered].max()
    for name, gt, gg in zip(["means", "quats", "scales", "opacities", "colors"], *grads):
        assert torch.allclose(gt, gg, rtol=1e-2, atol=1e-3 * gg.abs().max()), name


@pytest.mark.gpu
def test_gpu_facelift_near_plane_matches_and_alpha_clamp_is_refused_by_gsplat():
    """FaceLift's near plane passes through to gsplat (same image as our CPU path); its 0.99 alpha clamp is
    not available in gsplat's kernels, which is an error naming the way out."""
    cams = small_cameras(64, 48)
    vm, Ks = cams.w2c.float().cuda(), cams.K.float().cuda()
    scene = [x.cuda() for x in random_scene(500, 11)]
    scene[0] = scene[0] * 4  # some gaussians land between z 0.01 and 0.2 of a camera
    a = render(*scene, vm, Ks, 64, 48, near_plane=0.2, backend="torch")
    b = render(*scene, vm, Ks, 64, 48, near_plane=0.2, backend="gsplat")
    assert (a[0] - b[0]).abs().max() <= 1e-3 and (a[1] - b[1]).abs().max() <= 1e-3
    with pytest.raises(ValueError, match="backend='torch'"):
        render(*scene, vm, Ks, 64, 48, backend="gsplat", **FACELIFT_RASTER)
