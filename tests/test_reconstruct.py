"""The whole pipeline on one image: diffusion views -> GS-LRM gaussians (facelift_lib.reconstruct)."""
from __future__ import annotations

import pytest
import torch

from facelift_lib.cameras import standard_cameras
from facelift_lib.gslrm import GSLRM, GSLRMConfig
from facelift_lib.mvdiffusion import load_checkpoint_pipeline
from facelift_lib.reconstruct import reconstruct, reconstruct_from_views

TINY = GSLRMConfig(image_size=32, patch_size=8, d=32, n_layers=1, n_heads=2)


@pytest.fixture(scope="module")
def models(tiny_mv_checkpoint):
    torch.manual_seed(0)
    return load_checkpoint_pipeline(tiny_mv_checkpoint[0]), GSLRM(TINY).eval()


def test_one_image_gives_six_views_at_the_standard_cameras_and_their_gaussians(models):
    pipe, model = models
    reference = torch.rand(4, 40, 40, generator=torch.Generator().manual_seed(1))
    rec = reconstruct(reference, pipe, model, num_inference_steps=2, seed=3)
    assert rec.views.shape == (6, 4, 32, 32) and rec.reference is reference
    # the generated 16² views are read at GS-LRM's 32²: the standard cameras scaled with them, exactly
    torch.testing.assert_close(rec.cams.K, standard_cameras(pipe.camera_type, 32).K)
    torch.testing.assert_close(rec.cams.w2c, standard_cameras(pipe.camera_type).w2c)
    assert len(rec.gaussians) == 6 * 32 * 32 + model.config.num_global_tokens  # one per pixel + the global ones
    assert torch.isfinite(rec.gaussians.means).all()
    again = reconstruct(reference, pipe, model, num_inference_steps=2, seed=3)
    other = reconstruct(reference, pipe, model, num_inference_steps=2, seed=4)
    assert torch.equal(again.views, rec.views) and not torch.equal(other.views, rec.views)


def test_stage_two_alone_matches_a_direct_model_call(models):
    _, model = models
    cams = standard_cameras("mouse_standard_6view", 32)
    views = torch.rand(6, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    rec = reconstruct_from_views(views, cams, model)
    with torch.no_grad():
        direct = model(views[None, :, :3], (cams.K.float()[None], cams.w2c.float()[None]))[0]
    torch.testing.assert_close(rec.gaussians.means, direct.means)
    with pytest.raises(ValueError, match=r"\[V,4,H,W\] with V = 6"):
        reconstruct_from_views(views[:5], cams, model)
    with pytest.raises(ValueError, match="one RGBA image"):
        reconstruct(views, *models)
