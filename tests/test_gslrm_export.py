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


# --- FaceLift's filters and PLY (parity README §3 facts 7-8) ------------------------------------------------------
def one_each(**rows) -> Gaussians:
    """Gaussians with means / max scale / opacity set per row: rows = {name: (xyz, scale, opacity)}."""
    xyz, scale, opac = zip(*rows.values())
    n = len(xyz)
    return Gaussians(means=torch.tensor(xyz, dtype=torch.float32), quats=torch.tensor([[1.0, 0, 0, 0]] * n),
                     scales=torch.tensor(scale, dtype=torch.float32)[:, None].repeat(1, 3),
                     opacities=torch.tensor(opac, dtype=torch.float32), colors=torch.full((n, 3), 0.5))


def facelift_case_kept(preset: str) -> dict[str, bool]:
    """Which of a set of edge cases FaceLift's rules keep (every case at its own position)."""
    cases = dict(
        plain=((0.0, 0.0, -0.5), 0.05, 0.5),
        opacity_at_threshold=((0.01, 0.0, 0.2), 0.05, 0.04),       # keep only opacity > 0.04
        opacity_above=((0.02, 0.0, 0.2), 0.05, 0.0401),
        big_below=((0.0, 0.0, -0.1), 0.15, 0.5),                   # scale >= 0.1 and z <= 0: dropped (inference)
        big_at_z0=((0.03, 0.0, 0.0), 0.15, 0.5),                   # z > 0 is strict: still dropped
        big_above=((0.0, 0.0, 0.1), 0.15, 0.5),                    # z > 0: kept whatever its scale
        huge_below=((0.0, 0.05, -0.1), 0.25, 0.5),                 # dropped by gradio's 0.2 too
        corner_floater=((0.7, -0.7, -0.7), 0.05, 0.5),             # |x|,|y| > 0.6 and z < -0.6
        corner_high=((0.7, -0.7, 0.5), 0.05, 0.5),                 # not low: kept
        edge_not_corner=((0.7, 0.0, -0.7), 0.05, 0.5),             # only |x| > 0.6: kept
        box_edge=((0.91, -0.91, 1.0), 0.05, 0.5),                  # bounds inclusive
        outside_box=((0.92, 0.0, 0.0), 0.05, 0.5),
        below_box=((0.0, 0.0, -1.01), 0.05, 0.5),
    )
    kept, report = filter_gaussians(one_each(**cases), preset)
    assert report["input"] == len(cases) and report["kept"] == len(kept)
    found = {tuple(round(v, 4) for v in m) for m in kept.means.tolist()}
    return {name: tuple(round(v, 4) for v in torch.tensor(c[0]).tolist()) in found for name, c in cases.items()}


def test_facelift_filters_follow_inference_py():
    kept = facelift_case_kept("facelift")
    assert {k for k, v in kept.items() if not v} == {"opacity_at_threshold", "big_below", "big_at_z0", "huge_below",
                                                      "corner_floater", "outside_box", "below_box"}


def test_facelift_gradio_filters_use_scale_02_and_floater_075():
    kept = facelift_case_kept("facelift_gradio")
    # scale 0.15 passes gradio's 0.2; the 0.7 corner is inside gradio's 0.75 floater limit
    assert {k for k, v in kept.items() if not v} == {"opacity_at_threshold", "huge_below", "outside_box", "below_box"}


def test_facelift_ply_layout(tmp_path):
    from plyfile import PlyData

    g = cloud(50)
    g.colors[0] = torch.tensor([1.2, -0.1, 0.5])  # out-of-range colours clip in the uint8 copy
    path, report = export_ply(g, tmp_path / "facelift.ply", "facelift")
    v = PlyData.read(str(path))["vertex"]
    names = [p.name for p in v.properties]
    assert names[:6] == ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[6:51] == [f"f_rest_{i}" for i in range(45)] and all((v[f"f_rest_{i}"] == 0).all() for i in range(45))
    assert names[51:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
                          "red", "green", "blue"]
    assert v["red"].dtype.name == "uint8" and (v["red"][0], v["green"][0], v["blue"][0]) == (255, 0, 127)
    kept, _ = filter_gaussians(g, "facelift")
    torch.testing.assert_close(torch.from_numpy(v["opacity"].copy()), torch.logit(kept.opacities), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.from_numpy(v["scale_0"].copy()), kept.scales[:, 0].log(), atol=1e-6, rtol=0)
    back = load_ply(path, drop_higher_sh=True)  # the f_rest are zeros: nothing view-dependent is lost
    torch.testing.assert_close(back.means, kept.means)
    with pytest.raises(ValueError, match="preset"):
        filter_gaussians(g, "facelift_web")
