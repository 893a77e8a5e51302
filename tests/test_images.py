"""images.py: named backgrounds, compositing, straight alpha, and the premultiplied resize of straight RGBA."""
from __future__ import annotations

import pytest
import torch

from facelift_lib.images import (BACKGROUNDS, background_rgb, composite, on_background, on_white, resize_images,
                                 resize_rgba, straight_alpha)

COLOR = torch.tensor([0.8, 0.6, 0.4])


def disc_rgba(size: int = 64, n: int = 2) -> torch.Tensor:
    """[n,4,size,size] straight RGBA: a disc of one colour with a hard alpha edge, RGB = 0 under alpha 0 (as
    written samples store it)."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    inside = (((xs - size * 0.45) ** 2 + (ys - size * 0.55) ** 2) < (size * 0.3) ** 2).float()
    rgba = torch.cat([COLOR.view(3, 1, 1) * inside, inside[None]], 0)
    return rgba[None].repeat(n, 1, 1, 1)


def edge_pixels(alpha: torch.Tensor) -> torch.Tensor:
    """bool [N,H,W]: pixels with 0 < alpha < 1 after a resize (the object's edge)."""
    return (alpha > 0.02) & (alpha < 0.98)


def test_straight_resize_darkens_edges_and_premultiplied_does_not():
    """Compositing is linear, so composite-then-resize is the truth; a channel-by-channel resize of straight
    RGBA blends the RGB = 0 stored under alpha 0 into the edge pixels and darkens them once composited."""
    rgba = disc_rgba()
    truth = resize_images(composite(rgba, "white"), 16)
    premultiplied = composite(resize_rgba(rgba, 16), "white")
    straight = composite(resize_images(rgba, 16), "white")
    edge = edge_pixels(resize_rgba(rgba, 16)[:, 3])[:, None].expand_as(truth)
    assert edge.sum() > 20
    torch.testing.assert_close(premultiplied, truth, atol=1e-5, rtol=0)
    darkening = float((truth - straight)[edge].mean())
    assert darkening > 0.05, darkening  # straight edges are visibly darker than the truth
    assert (straight[edge] <= truth[edge] + 1e-6).all()
    # inside the object the colour is kept exactly
    inner = resize_rgba(rgba, 16)[:, 3] > 0.999
    torch.testing.assert_close(resize_rgba(rgba, 16)[:, :3].permute(1, 0, 2, 3)[:, inner],
                               COLOR.view(3, 1).expand(3, int(inner.sum())), atol=1e-5, rtol=0)


def test_resize_rgba_keeps_zero_rgb_under_zero_alpha_and_leaves_the_size_it_has():
    rgba = disc_rgba(32)
    small = resize_rgba(rgba, 8)
    assert small.shape == (2, 4, 8, 8)
    empty = small[:, 3:4].expand(-1, 3, -1, -1) == 0
    assert empty.any() and (small[:, :3][empty] == 0).all()
    assert resize_rgba(rgba, 32) is rgba and resize_images(rgba, 32) is rgba
    # an edge pixel keeps the object's colour (straight RGB), only its alpha is partial
    edge = edge_pixels(small[:, 3])
    torch.testing.assert_close(small[:, :3].permute(1, 0, 2, 3)[:, edge],
                               COLOR.view(3, 1).expand(3, int(edge.sum())), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="RGBA"):
        resize_rgba(rgba[:, :3], 8)


def test_composite_over_names_colours_and_one_colour_per_item():
    rgba = torch.rand(3, 6, 4, 5, 5)
    a = rgba[:, :, 3:4]
    for name, colour in BACKGROUNDS.items():
        torch.testing.assert_close(composite(rgba, name),
                                   rgba[:, :, :3] * a + torch.tensor(colour).view(3, 1, 1) * (1 - a))
    per_item = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = composite(rgba, per_item)
    torch.testing.assert_close(out, rgba[:, :, :3] * a + per_item[:, None, :, None, None] * (1 - a))
    white = on_white(rgba)
    assert torch.equal(white[:, :, 3], rgba[:, :, 3])
    torch.testing.assert_close(white, on_background(rgba, torch.ones(3)))
    torch.testing.assert_close(background_rgb("grey"), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="background must be one of"):
        background_rgb("purple")
    with pytest.raises(ValueError, match=r"\[B,3\]"):
        composite(rgba, torch.ones(2, 3))
    with pytest.raises(ValueError, match="RGBA"):
        composite(rgba[:, :, :3], "white")


def test_straight_alpha_undoes_premultiplication():
    rgb = torch.rand(2, 3, 4, 4)
    alpha = torch.rand(2, 1, 4, 4) * 0.9 + 0.1
    out = straight_alpha(rgb * alpha, alpha)
    torch.testing.assert_close(out[:, :3], rgb)
    torch.testing.assert_close(out[:, 3:], alpha)


def test_diffusion_dataset_resizes_stored_samples_premultiplied(tmp_path):
    """The diffusion training set reads written samples (RGB = 0 under alpha 0) at a larger size than the model's:
    its views composited on white must equal the samples composited then resized (no dark rim)."""
    from facelift_lib.cameras import standard_cameras
    from facelift_lib.io import load_sample, save_sample, write_list_file
    from facelift_lib.mvdiffusion.train import MultiViewDataset

    rgba = disc_rgba(32, n=6)
    d = save_sample(tmp_path / "s", rgba, standard_cameras("mouse_standard_6view", 32))
    views = MultiViewDataset(write_list_file(tmp_path / "all.txt", [d]), num_views=6, size=16).views(0)
    stored_on_white, _ = load_sample(d, background="white")
    torch.testing.assert_close(on_white(views)[:, :3], resize_images(stored_on_white[:, :3], 16), atol=1e-5, rtol=0)
