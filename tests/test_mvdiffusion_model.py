"""Multi-view attention processor behaviour, FaceLift UNet layout, view embeddings, the small model."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from facelift_lib.cameras import standard_cameras
from facelift_lib.mvdiffusion import (FACELIFT_UNET_CONFIG, MultiViewAttnProcessor, PixelModelConfig,
                                      PixelMVDiffusion, ViewEmbedding, set_multiview_attention)
from facelift_lib.mvdiffusion.model import multiview_attention_mode
from facelift_lib.mvdiffusion.pipeline import stock_unet_config

V = 6


def tiny_unet(mode: str):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)
    return set_multiview_attention(unet, V, mode).eval()


def changed_views(mode: str, perturbed_view: int) -> list[bool]:
    """Which views' outputs change when one view's input is perturbed (one sample of V views)."""
    unet = tiny_unet(mode)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(V, 3, 8, 8, generator=gen)
    ctx = torch.randn(V, 4, 8, generator=gen)
    t = torch.full((V,), 10)
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=ctx).sample
        x2 = x.clone()
        x2[perturbed_view] += torch.randn(3, 8, 8, generator=gen)
        out = unet(x2, t, encoder_hidden_states=ctx).sample
    return [(out[v] - base[v]).abs().max().item() > 1e-6 for v in range(V)]


def test_sparse_attention_view0_reaches_every_view():
    assert changed_views("sparse", 0) == [True] * V


def test_sparse_attention_other_views_stay_private():
    assert changed_views("sparse", 3) == [v == 3 for v in range(V)]


def test_dense_attention_reaches_every_view():
    assert changed_views("dense", 3) == [True] * V


def test_no_multiview_attention_is_per_view():
    assert changed_views("none", 0) == [v == 0 for v in range(V)]
    assert changed_views("none", 3) == [v == 3 for v in range(V)]


def test_samples_in_a_batch_do_not_mix():
    unet = tiny_unet("dense")
    x = torch.randn(2 * V, 3, 8, 8)
    ctx, t = torch.randn(2 * V, 4, 8), torch.full((2 * V,), 10)
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=ctx).sample
        x[0] += 1.0
        out = unet(x, t, encoder_hidden_states=ctx).sample
    assert torch.equal(out[V:], base[V:])
    assert not torch.equal(out[:V], base[:V])


def test_sparse_processor_matches_explicit_attention():
    """View v attends over concat(view 0 tokens, view v tokens), written out by hand."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    attn.set_processor(MultiViewAttnProcessor(V, "sparse"))
    x = torch.randn(2 * V, 5, 16)
    with torch.no_grad():
        got = attn(x)
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        want = torch.empty_like(got)
        for b in range(2):
            for view in range(V):
                i, r = b * V + view, b * V
                out_heads = []
                for h in range(2):
                    sl = slice(8 * h, 8 * h + 8)
                    kk = torch.cat([k[r, :, sl], k[i, :, sl]])
                    vv = torch.cat([v[r, :, sl], v[i, :, sl]])
                    w = torch.softmax(q[i, :, sl] @ kk.T / 8 ** 0.5, -1)
                    out_heads.append(w @ vv)
                want[i] = attn.to_out[0](torch.cat(out_heads, -1))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_processor_rejects_batch_not_multiple_of_views():
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=8, heads=1, dim_head=8)
    attn.set_processor(MultiViewAttnProcessor(V, "sparse"))
    with pytest.raises(ValueError, match="multiple of num_views"):
        attn(torch.randn(V + 1, 4, 8))


def test_cross_attention_keeps_default_processor():
    unet = tiny_unet("sparse")
    procs = unet.attn_processors
    assert all(isinstance(p, MultiViewAttnProcessor) for n, p in procs.items() if n.endswith("attn1.processor"))
    assert not any(isinstance(p, MultiViewAttnProcessor) for n, p in procs.items() if n.endswith("attn2.processor"))
    assert multiview_attention_mode(unet) == (V, "sparse")


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode"):
        MultiViewAttnProcessor(V, "full")


# --- FaceLift layout --------------------------------------------------------------------------------------
def test_facelift_unet_layout_matches_reference(reference_dir):
    """Stock UNet + FaceLift config (sd-2-1-unclip, in_channels 8, sample 64) == FaceLift's keys and shapes."""
    from diffusers import UNet2DConditionModel

    layout = json.loads((reference_dir / "layouts/mv_unet_state_dict.json").read_text())
    comparison = json.loads((reference_dir / "layouts/unet_keyset_comparison.json").read_text())
    assert comparison["identical_key_sets"] and comparison["identical_shapes"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**FACELIFT_UNET_CONFIG)
    set_multiview_attention(unet, 6, "sparse")
    ours = {k: list(v.shape) for k, v in unet.state_dict().items()}
    theirs = layout["params"]
    assert list(ours) == list(theirs)  # same keys, same order
    assert ours == theirs
    assert sum(p.numel() for p in unet.parameters()) == layout["total_params"]
    # processor count: FaceLift has 16 multi-view attn1 processors and 16 stock attn2 ones
    kinds = [type(p).__name__ for p in unet.attn_processors.values()]
    assert kinds.count("MultiViewAttnProcessor") == layout["attn_processors"]["MVAttnProcessor"]


def test_facelift_config_agrees_with_reference(reference_dir):
    used = json.loads((reference_dir / "layouts/mv_unet_state_dict.json").read_text())["config_used"]
    stock = stock_unet_config(used)
    for key, value in FACELIFT_UNET_CONFIG.items():
        want = stock[key]
        assert (list(value) if isinstance(value, tuple) else value) == want, key


# --- cameras and view embeddings ----------------------------------------------------------------------------
def test_standard_cameras_scale_intrinsics():
    full, small = standard_cameras("mouse_standard_6view"), standard_cameras("mouse_standard_6view", 32)
    assert (small.width, small.height) == (32, 32)
    torch.testing.assert_close(small.fx, full.fx * 32 / 512)
    torch.testing.assert_close(small.cx, torch.full((6,), 16.0, dtype=torch.float64))
    torch.testing.assert_close(small.w2c, full.w2c)
    assert small.meta["camera_type"] == "mouse_standard_6view"
    with pytest.raises(ValueError, match="unknown camera_type"):
        standard_cameras("rig")


@pytest.mark.parametrize("kind", ["learned", "camera", "plucker"])
def test_view_embedding_shapes_and_distinct_views(kind):
    cams = standard_cameras("mouse_standard_6view", 32)
    emb = ViewEmbedding(kind, 6, 16, tokens=3, cams=cams)()
    assert emb.shape[0] == 6 and emb.shape[-1] == 16
    flat = emb.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(6) * 1e3).min() > 1e-6  # every view gets its own context


def test_view_embedding_from_facelift_file(reference_dir):
    path = reference_dir / "prompt_embeds/clr_embeds.pt"
    emb = ViewEmbedding("file", 6, 1024, path=path)()
    assert emb.shape == (6, 77, 1024) and emb.dtype == torch.float32
    small = ViewEmbedding("file", 6, 32, path=path)
    assert small().shape == (6, 77, 32)  # projected, and the projection is trainable
    assert any(p.requires_grad for p in small.parameters())
    with pytest.raises(ValueError, match=r"\[4,L,D\]"):
        ViewEmbedding("file", 4, 1024, path=path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ViewEmbedding("file", 6, 1024, path=reference_dir / "nope.pt")


# --- the small model -------------------------------------------------------------------------------------
def _self_attention_tokens(model: PixelMVDiffusion, size: int = 32) -> set[int]:
    """Tokens per view seen by every self-attention (attn1) of one forward pass on [1,6,4,size,size]."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
             for n, m in model.unet.named_modules() if n.endswith("attn1")]
    x = torch.randn(1, 6, 4, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([5]), model.condition(torch.rand(1, 4, size, size)))
    for h in hooks:
        h.remove()
    assert out.shape == x.shape
    return set(seen)


def test_small_model_attention_only_at_lowest_resolution():
    cfg = PixelModelConfig(image_size=32, block_out_channels=(16, 32, 32), view_embedding="learned")
    model = PixelMVDiffusion(cfg)
    assert cfg.attention_resolution == 8
    assert _self_attention_tokens(model) == {8 * 8}


def test_attention_levels_put_multiview_attention_at_the_next_resolution_too():
    cfg = PixelModelConfig(image_size=32, block_out_channels=(16, 32, 32), view_embedding="learned",
                           attention_levels=2)
    model = PixelMVDiffusion(cfg)
    assert cfg.attention_resolution == 16
    assert _self_attention_tokens(model) == {16 * 16, 8 * 8}  # the 16² level too; the mid block at 8² still
    assert multiview_attention_mode(model.unet) == (6, "sparse")  # every attn1, the new level's included
    with pytest.raises(ValueError, match="attention_levels 4 must be 1..3"):
        PixelMVDiffusion(PixelModelConfig(image_size=32, block_out_channels=(16, 32, 32),
                                          view_embedding="learned", attention_levels=4))


def test_small_model_uses_reference_and_view_context():
    torch.manual_seed(0)
    cfg = PixelModelConfig(image_size=16, block_out_channels=(8, 16), view_embedding="camera")
    model = PixelMVDiffusion(cfg).eval()
    x = torch.randn(1, 6, 4, 16, 16)
    ref = torch.rand(1, 4, 16, 16)
    with torch.no_grad():
        a = model(x, torch.tensor([5]), model.condition(ref))
        b = model(x, torch.tensor([5]), model.condition(ref, drop_reference=torch.tensor([True])))
        same_inputs = model(x[:, :1].expand(-1, 6, -1, -1, -1), torch.tensor([5]), model.condition(ref))
    assert not torch.allclose(a, b)  # the reference matters
    assert not torch.allclose(same_inputs[0, 0], same_inputs[0, 1])  # identical inputs, different views


@pytest.mark.parametrize("rays,class_emb", [(False, False), (True, False), (False, True)])
def test_view_rays_and_class_embedding_tell_the_views_apart_without_attention(rays, class_emb):
    """With one cross-attention context for all views and per-view self-attention, only `view_rays` /
    `view_class_embedding` can make identical inputs give different views (at every resolution)."""
    torch.manual_seed(0)
    cfg = PixelModelConfig(image_size=16, block_out_channels=(8, 16), view_embedding="learned", mv_attention="none",
                           view_rays=rays, view_class_embedding=class_emb)
    model = PixelMVDiffusion(cfg).eval()
    with torch.no_grad():
        model.view_embedding.table.copy_(model.view_embedding.table[:1].expand_as(model.view_embedding.table))
        if class_emb:  # diffusers initialises it like any embedding; make the views' vectors clearly apart
            model.unet.class_embedding.weight.normal_()
        x = torch.randn(1, 1, 4, 16, 16).expand(-1, 6, -1, -1, -1)
        out = model(x, torch.tensor([500]), model.condition(torch.rand(1, 4, 16, 16)))
    differs = [not torch.allclose(out[0, 0], out[0, v], atol=1e-6) for v in range(1, 6)]
    assert all(differs) == (rays or class_emb) and any(differs) == (rays or class_emb)


def test_view_ray_maps_are_the_standard_cameras_rays_and_not_saved():
    from facelift_lib.cameras import plucker_rays

    cfg = PixelModelConfig(image_size=16, block_out_channels=(8, 16), view_rays=True)
    model = PixelMVDiffusion(cfg)
    want = plucker_rays(standard_cameras(cfg.camera_type, 16), "facelift", height=16, width=16)
    assert torch.equal(model.view_ray_maps, want) and model.view_ray_maps.shape == (6, 6, 16, 16)
    assert "view_ray_maps" not in model.state_dict()  # rebuilt from the cameras when loaded
    assert model.unet.conv_in.in_channels == 2 * cfg.channels + 6


def test_a_framed_model_generates_the_central_crop_of_its_frame():
    """frame_size: views in and out are frame² (what every caller sees); the UNet works on their central
    image_size² crop, its rays are the frame's rays cropped, and decoding puts background around the crop."""
    from facelift_lib.cameras import plucker_rays
    from facelift_lib.images import resize_rgba
    from facelift_lib.mvdiffusion.model import from_model_pixels, to_model_pixels

    cfg = PixelModelConfig(image_size=16, frame_size=24, block_out_channels=(8, 16), view_rays=True)
    model = PixelMVDiffusion(cfg)
    assert model.image_size == 24 and model.unet.config.sample_size == 16
    frame_rays = plucker_rays(standard_cameras(cfg.camera_type, 24), "facelift", height=24, width=24)
    assert torch.allclose(model.view_ray_maps, frame_rays[..., 4:20, 4:20], atol=1e-6)

    images = torch.rand(1, 6, 4, 48, 48)
    x0 = model.encode_views(images)
    want = to_model_pixels(resize_rgba(images.flatten(0, 1), 24)[..., 4:20, 4:20]).view(1, 6, 4, 16, 16)
    assert torch.equal(x0, want)
    out = model.decode_views(x0)
    assert out.shape == (1, 6, 4, 24, 24)
    assert torch.equal(out[..., 4:20, 4:20], from_model_pixels(x0))
    border = out.clone()
    border[..., 4:20, 4:20] = float("nan")
    rgb, alpha = border[:, :, :3], border[:, :, 3]
    assert (rgb[~rgb.isnan()] == 1).all() and (alpha[~alpha.isnan()] == 0).all()
    assert (~rgb.isnan()).sum() == 1 * 6 * 3 * (24 * 24 - 16 * 16)

    from diffusers import DDIMScheduler

    from facelift_lib.mvdiffusion.pipeline import sample_views
    sched = DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    gen = sample_views(model.eval(), sched, images[:, 0], num_inference_steps=2, guidance_scale=2.0, progress=False)
    assert gen.shape == (1, 6, 4, 24, 24) and (gen[:, :, 3, :4] == 0).all()

    with pytest.raises(ValueError, match="even number"):
        PixelMVDiffusion(PixelModelConfig(image_size=16, frame_size=23, block_out_channels=(8, 16)))


def _bar_mice(widths: list[int], size: int = 8) -> torch.Tensor:
    """[M,V,4,S,S] RGBA mice whose view 0 is a horizontal bar `width` px long (the retrieval key) and whose view v
    is a v px high block at the left (so each mouse's views are its own, and view v tells v apart)."""
    mice = torch.zeros(len(widths), V, 4, size, size)
    for m, w in enumerate(widths):
        mice[m, 0, :, 3:5, :w] = 1
        for v in range(1, V):
            mice[m, v, :, :v, : m + 1] = 1
    return mice


def test_view_prior_retrieves_the_nearest_training_mice_and_never_the_query_itself():
    from facelift_lib.mvdiffusion.view_prior import alpha_to_bank, nearest_views

    mice = _bar_mice([2, 4, 5, 8])
    bank = alpha_to_bank(mice[:, :, 3], 8)  # [4,V,8,8]
    own = mice[1, 0, 3]  # mouse 1's own key: it is skipped, mouse 2 (bar 5 vs 4) is the nearest other
    assert torch.equal(nearest_views(bank, own[None], 1)[0], mice[2, :, 3])
    near = own.clone()
    near[5, 0] = 1  # not mouse 1's key any more (an unseen mouse): mouse 1 is now the nearest
    assert torch.equal(nearest_views(bank, near[None], 1)[0], mice[1, :, 3])
    two = nearest_views(bank, near[None], 2)[0]  # the mean of the 2 nearest: mice 1 and 2
    assert torch.allclose(two, (mice[1, :, 3] + mice[2, :, 3]) / 2, atol=1 / 255)
    with pytest.raises(ValueError, match="k = 4 must be 1..3"):
        nearest_views(bank, own[None], 4)


def test_view_prior_reaches_every_view_pixel_aligned_and_is_saved_with_the_model():
    torch.manual_seed(0)
    cfg = PixelModelConfig(image_size=8, block_out_channels=(8, 16), view_embedding="camera", view_prior_mice=4,
                           view_prior_size=8, view_prior_k=1)
    model = PixelMVDiffusion(cfg).eval()
    assert model.unet.conv_in.in_channels == 2 * cfg.channels + 1
    mice = _bar_mice([2, 4, 5, 8])
    ref = mice[1, 0].clone()
    ref[3, 5, 0] = 1  # an unseen mouse next to mouse 1
    with pytest.raises(ValueError, match="bank is empty"):
        model.condition(ref[None])
    with pytest.raises(ValueError, match="holds view_prior_mice = 4 mice, got 3"):
        model.set_view_prior_bank(mice[:3])
    model.set_view_prior_bank(mice)
    cond = model.condition(ref[None])
    assert cond["view_prior"].shape == (1, V, 1, 8, 8)
    assert torch.equal(cond["view_prior"][0, :, 0], mice[1, :, 3] * 2 - 1)  # mouse 1's views, each its own
    dropped = model.condition(ref[None], drop_reference=torch.tensor([True]))
    assert all((v == 0).all() for v in dropped.values()) and set(dropped) == {"reference", "view_prior"}
    assert all((v == 0).all() for v in model.null_condition(cond).values())

    x = torch.randn(1, V, 4, 8, 8)
    with torch.no_grad():
        out = model(x, torch.tensor([900]), cond)
        other = model(x, torch.tensor([900]), {**cond, "view_prior": -cond["view_prior"]})
    assert not torch.allclose(out, other)  # the model reads the prior

    loaded = PixelMVDiffusion(cfg).eval()
    loaded.load_state_dict(model.state_dict())  # the bank travels in the state dict (so in shipped files)
    assert torch.equal(loaded.view_prior_bank, model.view_prior_bank)
    assert torch.equal(loaded.condition(ref[None])["view_prior"], cond["view_prior"])
    blank = model.untrained_like()  # the untrained control keeps the bank, so only training differs
    assert torch.equal(blank.view_prior_bank, model.view_prior_bank) and not blank.training
    assert not torch.equal(blank.unet.conv_in.weight, model.unet.conv_in.weight)


def test_prior_started_sampler_starts_from_the_retrieved_views_with_the_reference_as_view_0():
    from diffusers import DDIMScheduler

    from facelift_lib.mvdiffusion.pipeline import prior_views, sample_views, sampler_label, strength_steps

    torch.manual_seed(0)
    cfg = PixelModelConfig(image_size=8, block_out_channels=(8, 16), view_embedding="camera", view_prior_mice=4,
                           view_prior_size=8, view_prior_k=1)
    model = PixelMVDiffusion(cfg).eval()
    mice = _bar_mice([2, 4, 5, 8])
    model.set_view_prior_bank(mice)
    ref = mice[1, 0].clone()
    ref[3, 5, 0] = 1  # an unseen mouse next to mouse 1 (its retrieved views are mouse 1's)
    ref[:3] = 0.25 * ref[3]  # a grey mouse: the views are filled with its colour
    x0 = prior_views(model, model.condition(ref[None]))[0]  # [V,4,8,8] model space
    assert torch.equal(x0[0], model.encode_views(ref[None, None])[0, 0])  # view 0 is the input itself
    alpha = mice[1, 1:, 3]  # [V-1,8,8]
    assert torch.equal((x0[1:, 3] + 1) / 2, alpha)
    rgb = (x0[1:, :3] + 1) / 2
    assert torch.allclose(rgb, (0.25 * alpha + (1 - alpha))[:, None].expand_as(rgb), atol=1e-6)

    sched = DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    kw = dict(num_inference_steps=20, guidance_scale=1.0, eta=0.0, progress=False)
    late = sample_views(model, sched, ref[None], strength=0.05, **kw)[0]  # one step from barely noised prior
    assert strength_steps(20, 0.05) == 1 and strength_steps(20, 0.4) == 8
    # the protocol's sampler label tells the two starts apart (and is FaceLift's plain one at strength 1)
    assert sampler_label(20, 1.0, 0.0, 0) == "DDIM 20 steps, guidance 1, eta 0, seed 0"
    assert sampler_label(20, 1.0, 0.0, 0, 0.4).endswith("from the retrieval prior at strength 0.4 (8 steps run)")
    assert (late[1:, 3] - alpha).abs().max() < 0.15  # an untrained model barely moves it at the last step
    full = sample_views(model, sched, ref[None], **kw)[0]  # strength 1: pure noise, the prior plays no part
    assert (full[1:, 3] - alpha).abs().max() > 0.5
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength"):
            sample_views(model, sched, ref[None], strength=bad, **kw)
    plain = PixelMVDiffusion(PixelModelConfig(image_size=8, block_out_channels=(8, 16))).eval()
    with pytest.raises(ValueError, match="no retrieval prior|none of"):
        sample_views(plain, sched, ref[None], strength=0.5, **kw)


def test_mirror_permutation_maps_the_mirrored_scene_onto_flipped_views_of_the_rig():
    from facelift_lib.cameras import standard_cameras
    from facelift_lib.mvdiffusion.view_prior import mirror_permutation

    cams = standard_cameras("mouse_standard_6view", 64)
    perm = mirror_permutation(cams)
    assert perm == [0, 5, 4, 3, 2, 1]
    pts = torch.rand(50, 3, dtype=torch.float64) * 0.4 - 0.2  # a mouse-sized cloud about the origin
    mirrored = pts * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)  # camera 0 sits on +X: mirror in XZ

    def project(p: torch.Tensor, v: int) -> torch.Tensor:  # [N,2] pixel coordinates in camera v
        cam = p @ cams.w2c[v, :3, :3].T + cams.w2c[v, :3, 3]
        uv = cam @ cams.K[v].T
        return uv[:, :2] / uv[:, 2:]

    for v in range(6):
        a, b = project(mirrored, v), project(pts, perm[v])
        assert torch.allclose(a[:, 0], 64 - b[:, 0], atol=1e-9) and torch.allclose(a[:, 1], b[:, 1], atol=1e-9)
    with pytest.raises(ValueError, match="no mirror image"):
        mirror_permutation(standard_cameras("mouse_rig_6view", 64))


def test_view_prior_retrieves_mirror_images_but_never_the_querys_own():
    from facelift_lib.mvdiffusion.view_prior import alpha_to_bank, mirrored_bank, nearest_views

    perm = [0, 5, 4, 3, 2, 1]
    mice = _bar_mice([2, 4, 5, 8])
    mice[:, 0, :, 6, 0] = 1  # a foot at the left: no key is its own mirror image
    bank = alpha_to_bank(mice[:, :, 3], 8)
    mirror = mirrored_bank(bank, perm)  # [4,V,8,8]
    unseen = mice[2, 0, 3].flip(-1)  # mouse 2 seen in a mirror: its nearest is mouse 2's mirror entry
    assert torch.equal(nearest_views(bank, unseen[None], 1, perm)[0], mirror[2].float() / 255)
    assert not torch.equal(nearest_views(bank, unseen[None], 1)[0], mirror[2].float() / 255)  # without: none
    own = mice[2, 0, 3]  # a training mouse: neither itself nor its mirror image
    got = nearest_views(bank, own[None], 1, perm)[0]
    assert not torch.equal(got, bank[2].float() / 255) and not torch.equal(got, mirror[2].float() / 255)
    # the model retrieves the mirror images when its config says so (and only then)
    cfg = PixelModelConfig(image_size=8, block_out_channels=(8, 16), view_embedding="camera", view_prior_mice=4,
                           view_prior_size=8, view_prior_k=1)
    plain, mirrored = (PixelMVDiffusion(dataclasses.replace(cfg, view_prior_mirror=m)).eval() for m in (False, True))
    assert plain.view_prior_mirror is None and mirrored.view_prior_mirror == perm
    ref = mice[2, 0].flip(-1)  # mouse 2 in a mirror, RGBA
    for model in (plain, mirrored):
        model.set_view_prior_bank(mice)
    assert torch.equal(mirrored.condition(ref[None])["view_prior"][0, :, 0], mirror[2].float() / 255 * 2 - 1)
    assert not torch.equal(plain.condition(ref[None])["view_prior"][0, :, 0], mirror[2].float() / 255 * 2 - 1)
