"""GS-LRM export: filters that report what they remove, PLY, turntable."""
from __future__ import annotations

import pytest
import torch

from facelift_lib.gaussians import Gaussians, load_ply
from facelift_lib.cameras import mouse_standard_6view
from facelift_lib.gslrm.export import (ExportFilters, export_fidelity, export_ply, filter_gaussians, save_turntable_gif,
                                       turntable_frames)


def cloud(n: int = 400, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.2
    return Gaussians(means=means, quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                     scales=torch.full((n, 3), 0.02), opacities=torch.full((n,), 0.9),
                     colors=torch.rand(n, 3, generator=g))


def test_each_filter_removes_what_it_should_and_says_so():
    g = cloud()
    g.opacities[:10] = 0.0005                 # transparent
    g.scales[10:15] = 0.5                     # smeared
    g.means[15:18] = torch.tensor([3.0, 0.0, 0.0])  # outside the crop box
    g.means[18] = torch.tensor([0.0, 0.0, 1.2])     # inside the box but far from everything: a floater
    g.means[19, 0] = float("nan")
    kept, report = filter_gaussians(g, ExportFilters())
    assert report["input"] == 400 and report["nonfinite"] == 1
    assert (report["min_opacity"], report["max_scale"], report["crop_box"]) == (10, 5, 3)
    assert report["floaters"] >= 1 and report["kept"] == len(kept)
    assert not (kept.means == torch.tensor([0.0, 0.0, 1.2])).all(-1).any()
    assert report["kept"] == 400 - 1 - 10 - 5 - 3 - report["floaters"]
    none = ExportFilters(min_opacity=None, max_scale=None, crop_box=None, floater_k=None)
    assert filter_gaussians(cloud(), none)[1]["kept"] == 400


def test_export_fidelity_is_perfect_for_the_same_set_and_drops_with_what_is_removed():
    g, cams = cloud(), mouse_standard_6view()
    K = cams.K.float() * torch.tensor([64 / 512, 64 / 512, 1.0])[:, None]
    w2c = cams.w2c.float()
    same = export_fidelity(g, g, K, w2c, 64)
    assert same["mask_iou"] == 1.0 and same["psnr_full"] > 60
    half, _ = filter_gaussians(g, ExportFilters(crop_box=((-1.0, -1.0, -1.0), (0.0, 1.0, 1.0)), floater_k=None))
    worse = export_fidelity(g, half, K, w2c, 64)
    assert worse["mask_iou"] < 0.9 and worse["psnr_full"] < same["psnr_full"] - 10


def test_export_ply_round_trip(tmp_path):
    g = cloud(100)
    path, report = export_ply(g, tmp_path / "recon.ply", ExportFilters(floater_k=None))
    back = load_ply(path)
    assert len(back) == report["kept"] == 100
    torch.testing.assert_close(back.means, g.means, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.opacities, g.opacities, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="removed every gaussian"):
        export_ply(g, tmp_path / "none.ply", ExportFilters(min_opacity=0.99))


def test_turntable(tmp_path):
    g = cloud(200)
    frames = turntable_frames(g, n_frames=4, size=32)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype.name == "uint8"
    assert (frames < 250).any(axis=(1, 2, 3)).all()  # the cloud is visible in every frame (white background)
    path = save_turntable_gif(g, tmp_path / "t.gif", n_frames=3, size=32)
    assert path.is_file() and path.read_bytes()[:3] == b"GIF"
