"""Loading a local FaceLift-layout pipeline folder and sampling from it (tiny random components)."""
from __future__ import annotations

import shutil

import pytest
import torch

from facelift_lib.mvdiffusion import MultiViewAttnProcessor, load_facelift_pipeline
from facelift_lib.mvdiffusion.pipeline import write_tiny_facelift_pipeline


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_facelift_pipeline(tmp_path_factory.mktemp("facelift") / "pipe", facelift_block_names=True)


def test_loads_facelift_folder_with_multiview_attention(tiny_dir):
    pipe = load_facelift_pipeline(tiny_dir)
    procs = pipe.model.unet.attn_processors
    attn1 = [p for n, p in procs.items() if n.endswith("attn1.processor")]
    attn2 = [p for n, p in procs.items() if n.endswith("attn2.processor")]
    assert attn1 and all(isinstance(p, MultiViewAttnProcessor) and p.mode == "sparse" and p.num_views == 6
                         for p in attn1)
    assert attn2 and not any(isinstance(p, MultiViewAttnProcessor) for p in attn2)
    assert pipe.model.unet.config.in_channels == 8
    assert not any(p.requires_grad for p in pipe.model.vae.parameters())
    assert not any(p.requires_grad for p in pipe.model.image_encoder.parameters())


def test_sampling_shapes_determinism_and_reference_use(tiny_dir):
    pipe = load_facelift_pipeline(tiny_dir, view_embeddings=torch.randn(6, 5, 32))
    ref = torch.rand(1, 4, 40, 40)
    a = pipe(ref, num_inference_steps=2, guidance_scale=2.0, seed=3, progress=False)
    b = pipe(ref, num_inference_steps=2, guidance_scale=2.0, seed=3, progress=False)
    c = pipe(torch.rand(1, 4, 40, 40), num_inference_steps=2, guidance_scale=2.0, seed=3, progress=False)
    assert a.shape == (1, 6, 4, 32, 32)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not_here"):
        load_facelift_pipeline(tmp_path / "not_here")


@pytest.mark.parametrize("component", ["image_encoder", "image_noising_scheduler"])
def test_missing_component_is_named(tiny_dir, tmp_path, component):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / component)
    with pytest.raises(FileNotFoundError, match=rf"missing pipeline component folder\(s\) \['{component}'\]"):
        load_facelift_pipeline(broken)


def test_sampling_without_view_embeddings_is_an_error(tiny_dir):
    pipe = load_facelift_pipeline(tiny_dir)
    with pytest.raises(RuntimeError, match="set_view_embeddings"):
        pipe(torch.rand(1, 4, 32, 32), num_inference_steps=1, progress=False)


def test_view_embeddings_of_wrong_width_are_rejected(tiny_dir):
    with pytest.raises(ValueError, match=r"\[6,L,32\]"):
        load_facelift_pipeline(tiny_dir, view_embeddings=torch.randn(6, 77, 1024))


def test_stock_unet_without_reference_channels_is_rejected(tiny_dir, tmp_path):
    """A UNet that loads fine but takes only the noisy latent (4 channels, no reference latent) must be
    refused by our own check, not by a weight-shape error of diffusers."""
    from diffusers import UNet2DConditionModel

    from facelift_lib.mvdiffusion.pipeline import load_facelift_unet

    broken = tmp_path / "stock"
    shutil.copytree(tiny_dir, broken)
    cfg = dict(load_facelift_unet(tiny_dir / "unet").config)
    shutil.rmtree(broken / "unet")
    UNet2DConditionModel.from_config({**cfg, "in_channels": 4}).save_pretrained(broken / "unet")
    assert load_facelift_unet(broken / "unet").config.in_channels == 4  # the folder itself loads
    with pytest.raises(ValueError, match=r"in_channels=4, out_channels=4; a FaceLift multi-view UNet takes noisy"):
        load_facelift_pipeline(broken)
