"""GS-LRM model: FaceLift layout, conventions, checkpoint loading."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from facelift_lib.cameras import gslrm_input, mouse_standard_6view, orbit_cameras
from facelift_lib.gslrm import GSLRM, CheckpointError, GSLRMConfig, load_facelift_checkpoint

SMALL = GSLRMConfig(image_size=32, patch_size=8, d=64, n_layers=2, n_heads=4)


@pytest.fixture(scope="module")
def layout(reference_dir) -> dict:
    return json.loads((reference_dir / "layouts" / "gslrm_state_dict.json").read_text())


def small_views(n_views: int = 6, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cams = orbit_cameras([i * 360.0 / n_views for i in range(n_views)], 20.0, width=512)
    return torch.rand(1, n_views, 3, size, size, generator=g), cams


def test_layout_matches_facelift_on_meta_device(layout):
    with torch.device("meta"):
        model = GSLRM(GSLRMConfig())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: v for k, v in layout["params"].items() if not k.startswith("loss_calculator.")}
    assert sorted(set(theirs) - set(ours)) == [] and sorted(set(ours) - set(theirs)) == []
    assert ours == theirs
    assert model.num_parameters() == layout["total_params_excluding_loss_calculator_vgg"]
    assert all(p.is_meta for p in model.parameters())


def test_model_input_is_cameras_gslrm_input():
    torch.manual_seed(0)
    model = GSLRM(SMALL)
    images, cams = small_views()
    x = model.model_input(images, [cams])
    torch.testing.assert_close(x[0], gslrm_input(images[0], cams))


def test_forward_gaussians_are_finite_and_on_pixel_rays():
    torch.manual_seed(0)
    model = GSLRM(SMALL).eval()
    images, cams = small_views()
    V, H, W = 6, 32, 32
    with torch.no_grad():
        g = model(images, [cams])
    G = SMALL.num_global_tokens
    assert g.means.shape == (1, V * H * W + G, 3) and g.opacities.shape == (1, V * H * W + G)
    for t in (g.means, g.quats, g.scales, g.opacities, g.colors):
        assert torch.isfinite(t).all()
    assert (g.scales > 0).all() and (g.scales <= torch.exp(torch.tensor(SMALL.scale_max_log)) + 1e-6).all()
    assert ((g.opacities > 0) & (g.opacities < 1)).all()
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(1, V * H * W + G))

    # every pixel gaussian lies on its own pixel's ray, within ±1.8 of the point nearest the origin
    x9 = gslrm_input(images[0], cams).permute(0, 2, 3, 1).reshape(-1, 9)
    d, nearest = x9[:, 3:6].double(), x9[:, 6:9].double()
    o = cams.centers.repeat_interleave(H * W, 0)
    xyz = g.means[0, : V * H * W].double()
    along = xyz - o
    t = (along * d).sum(-1)
    assert (along - t[:, None] * d).norm(dim=-1).max() < 1e-4
    s = ((xyz - nearest) * d).sum(-1)
    assert s.abs().max() <= SMALL.depth_range + 1e-4
    assert (t > 0).all()  # in front of the camera: nearest point is at 2.7 along the ray, |s| <= 1.8


def test_camera_tensor_form_equals_cameras_list():
    torch.manual_seed(0)
    model = GSLRM(SMALL).eval()
    images, cams = small_views()
    small = cams.replace(K=cams.K * torch.tensor([[32 / 512], [32 / 512], [1.0]], dtype=torch.float64),
                         width=32, height=32)
    with torch.no_grad():
        a = model(images, [cams])
        b = model(images, (small.K[None].float(), small.w2c[None].float()))
    torch.testing.assert_close(a.means, b.means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.colors, b.colors, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_patch_and_pixel_order_round_trip():
    """A pixel's raw head output must come from that pixel's own input features.

    Zero layers; patch embedding copies the 2x2x9 features into the token, the head routes each
    sub-pixel's red channel to that sub-pixel's opacity. One bright pixel per patch must then be the
    most opaque gaussian of its patch, at the same place.
    """
    cfg = GSLRMConfig(image_size=16, patch_size=2, d=64, n_layers=0, n_heads=4)
    model = GSLRM(cfg).eval()
    p = 2
    model.patch_embedder[1].weight.zero_()
    model.patch_embedder[1].weight[: p * p * 9].copy_(torch.eye(p * p * 9))  # token = the patch's features
    head = model.pixel_gaussian_decoder[1].weight
    head.zero_()
    for k in range(p * p):
        head[k * 14 + 13, k * 9 + 0] = 1.0  # opacity of sub-pixel k <- red of sub-pixel k
    g = torch.Generator().manual_seed(3)
    V, H, W = 2, 16, 16
    bright = torch.randint(0, p * p, (V, H // p, W // p), generator=g)
    images = torch.zeros(1, V, 3, H, W)
    rows = torch.arange(H // p)[:, None] * p + bright // p
    cols = torch.arange(W // p)[None, :] * p + bright % p
    for v in range(V):
        images[0, v, 0, rows[v], cols[v]] = 1.0
    cams = orbit_cameras([0.0, 90.0], 10.0, width=512)
    opac = model(images, [cams]).opacities[0, : V * H * W].reshape(V, H // p, p, W // p, p)
    opac = opac.permute(0, 1, 3, 2, 4).reshape(V, H // p, W // p, p * p)
    assert torch.equal(opac.argmax(-1), bright)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    images, cams = small_views(n_views=2, size=16)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = GSLRM(GSLRMConfig(image_size=16, d=32, n_layers=2, n_heads=2, gradient_checkpointing=ckpt)).train()
        model(images, [cams[:2]]).means.square().mean().backward()
        grads.append(model.transformer_layers[0].attn.to_qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# --- checkpoints ------------------------------------------------------------------------------
def facelift_checkpoint(model_state: dict, extra: dict | None = None) -> dict:
    state = dict(model_state)
    state.update(extra or {})
    return {"model": state, "optimizer": {}, "lr_scheduler": {}, "fwdbwd_pass_step": 7, "param_update_step": 7}


def test_missing_checkpoint_path_names_the_path(tmp_path):
    missing = tmp_path / "ckpt_0000000000021125.pt"
    with pytest.raises(FileNotFoundError, match="ckpt_0000000000021125.pt"):
        load_facelift_checkpoint(missing, SMALL)
    with pytest.raises(FileNotFoundError, match="directory"):
        load_facelift_checkpoint(tmp_path, SMALL)


def test_not_a_checkpoint_is_rejected(tmp_path):
    bad = tmp_path / "ckpt_bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="ckpt_bad.pt"):
        load_facelift_checkpoint(bad, SMALL)
    torch.save({"weights": {}}, tmp_path / "ckpt_nomodel.pt")
    with pytest.raises(CheckpointError, match="'model'"):
        load_facelift_checkpoint(tmp_path / "ckpt_nomodel.pt", SMALL)


def test_small_checkpoint_round_trip_drops_vgg_keys(tmp_path, caplog):
    torch.manual_seed(1)
    model = GSLRM(SMALL).eval()
    vgg = {"loss_calculator.perceptual_loss_module.net.conv1.weight": torch.zeros(64, 3, 3, 3)}
    path = tmp_path / "ckpt_0000000000000007.pt"
    torch.save(facelift_checkpoint(model.state_dict(), vgg), path)
    with caplog.at_level(logging.INFO, logger="facelift_lib.gslrm.model"):
        loaded = load_facelift_checkpoint(path, SMALL).eval()
    assert "loss_calculator" in caplog.text
    images, cams = small_views()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, [cams]).means, model(images, [cams]).means)


def test_mismatched_checkpoint_lists_keys_and_shapes(tmp_path):
    state = GSLRM(SMALL).state_dict()
    state.pop("transformer_layers.1.norm2.weight")
    state["transformer_layers.0.attn.to_qkv.weight"] = torch.zeros(5, 64)
    state["extra_head.weight"] = torch.zeros(1)
    path = tmp_path / "ckpt_x.pt"
    torch.save(facelift_checkpoint(state), path)
    with pytest.raises(CheckpointError) as err:
        load_facelift_checkpoint(path, SMALL)
    msg = str(err.value)
    assert "ckpt_x.pt" in msg and "transformer_layers.1.norm2.weight" in msg and "extra_head.weight" in msg
    assert "transformer_layers.0.attn.to_qkv.weight: checkpoint (5, 64) vs model (192, 64)" in msg
    # a small checkpoint loaded at the FaceLift size says so too
    torch.save(facelift_checkpoint(GSLRM(SMALL).state_dict()), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_facelift_checkpoint(path)


@pytest.mark.slow
def test_facelift_structured_checkpoint_loads_and_runs_at_128(tmp_path, layout):
    """Random weights in FaceLift's exact layout (VGG keys included), loaded strictly, forward at 128²."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in layout["params"].items()}
    for k in state:
        if "norm" in k and state[k].ndim == 1:
            state[k] = torch.ones_like(state[k])
    path = tmp_path / "ckpt_0000000000021125.pt"
    torch.save(facelift_checkpoint(state), path)
    del state
    model = load_facelift_checkpoint(path).eval()
    assert model.num_parameters() == layout["total_params_excluding_loss_calculator_vgg"]
    cams = mouse_standard_6view()
    images = torch.rand(1, 6, 3, 128, 128, generator=g)
    with torch.no_grad():
        out = model(images, [cams])
    assert out.means.shape == (1, 6 * 128 * 128 + 2, 3)
    assert all(torch.isfinite(t).all() for t in (out.means, out.scales, out.opacities, out.colors))


def test_double_resolution_reads_2x_views_as_the_model_reads_their_2x2_means(tmp_path):
    """A warm start at 2x: the same tokens from the 2x2 means, each parent's gaussian on its four children's
    rays at half the scale, so the 2x model's renders of a mouse match the 1x model's (and not halving the scales
    would not)."""
    import math

    import torch.nn.functional as F

    from facelift_lib.gslrm.model import double_resolution
    from facelift_lib.images import on_white
    from facelift_lib.io import load_sample
    from facelift_lib.reconstruct import reconstruct_from_views, rendered_views, view_quality
    from facelift_lib.standard_mice import MouseDataConfig, render_mice

    torch.manual_seed(0)
    model = GSLRM(GSLRMConfig(image_size=16, patch_size=4, d=32, n_layers=1, n_heads=2, depth_range=1.0)).eval()
    big = double_resolution(model)
    assert (big.config.image_size, big.config.patch_size) == (32, 8)
    assert big.config.scale_bias == pytest.approx(model.config.scale_bias - math.log(2))
    # the embedder: a 9-channel input constant on 2x2 blocks gives exactly the 1x tokens
    x = torch.rand(2, 9, 16, 16)
    up = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(big.patch_embedder(up), model.patch_embedder(x), atol=1e-6, rtol=1e-5)
    # a mouse: 32² views vs their 2x2 means at 16², renders at 32²
    d = render_mice(tmp_path, "test", 1, MouseDataConfig(size=32, n_gaussians=500), progress=False).dirs[0]
    views, cams = load_sample(d, background=None)
    views = on_white(views.float())
    small = reconstruct_from_views(F.avg_pool2d(views, 2), cams.scaled_to(16, 16), model).gaussians
    doubled = reconstruct_from_views(views, cams, big).gaussians
    assert doubled.means.shape[-2] - 4 * small.means.shape[-2] == -3 * model.config.num_global_tokens
    same_scales = GSLRM(GSLRMConfig(**{**big.config.to_dict(), "scale_bias": model.config.scale_bias,
                                       "scale_max_log": model.config.scale_max_log})).eval()
    same_scales.load_state_dict(big.state_dict())
    unhalved = reconstruct_from_views(views, cams, same_scales).gaussians
    ref = rendered_views(small, cams)
    agree = view_quality(rendered_views(doubled, cams), ref)["psnr_full"].mean()
    agree_unhalved = view_quality(rendered_views(unhalved, cams), ref)["psnr_full"].mean()
    assert agree > 25.0 and agree > agree_unhalved + 5.0, (agree, agree_unhalved)  # seen: 28.1 vs 18.7 dB
