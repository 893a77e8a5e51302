"""Gaussians container, quaternion helpers and the 3DGS PLY format."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from facelift_lib.gaussians import (SH_C0, Gaussians, load_ply, matrix_to_quat, quat_multiply, quat_to_matrix,
                                    save_ply)


def random_gaussians(n: int = 100, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        scales=torch.rand(n, 3, generator=g) * 0.1 + 1e-3,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        colors=torch.rand(n, 3, generator=g),
    )


def test_ply_round_trip(tmp_path):
    g = random_gaussians()
    path = save_ply(g, tmp_path / "sub" / "g.ply")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    h = load_ply(path)
    assert h.means.dtype == torch.float32 and len(h) == len(g)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(h, name), getattr(g, name), rtol=1e-5, atol=1e-6), name


def test_ply_uses_the_standard_3dgs_layout(tmp_path):
    """What splat viewers read: property order, logit opacity, log scale, SH DC colour, wxyz rotation."""
    g = random_gaussians(3)
    v = PlyData.read(str(save_ply(g, tmp_path / "g.ply")))["vertex"].data
    assert list(v.dtype.names) == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                                   "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert all(v.dtype[n] == np.dtype("<f4") for n in v.dtype.names)
    o, s, c, q = g.opacities[0].item(), g.scales[0, 1].item(), g.colors[0, 2].item(), g.quats[0, 0].item()
    assert math.isclose(v["opacity"][0], math.log(o / (1 - o)), rel_tol=1e-5)
    assert math.isclose(v["scale_1"][0], math.log(s), rel_tol=1e-5)
    assert math.isclose(v["f_dc_2"][0], (c - 0.5) / SH_C0, rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(v["rot_0"][0], q, rel_tol=1e-6)


def test_load_ply_refuses_higher_sh_unless_asked(tmp_path):
    g = random_gaussians(4)
    v = PlyData.read(str(save_ply(g, tmp_path / "g.ply")))["vertex"].data
    names = list(v.dtype.names) + [f"f_rest_{i}" for i in range(9)]
    rich = np.zeros(len(v), dtype=[(n, "<f4") for n in names])
    for n in v.dtype.names:
        rich[n] = v[n]
    PlyData([PlyElement.describe(rich, "vertex")]).write(str(tmp_path / "sh1.ply"))
    with pytest.raises(ValueError, match="drop_higher_sh"):
        load_ply(tmp_path / "sh1.ply")
    assert torch.allclose(load_ply(tmp_path / "sh1.ply", drop_higher_sh=True).colors, g.colors, atol=1e-6)


def test_save_ply_rejects_bad_input(tmp_path):
    g = random_gaussians(4)
    with pytest.raises(ValueError, match="unbatched"):
        save_ply(Gaussians(*(getattr(g, n)[None] for n in ("means", "quats", "scales", "opacities", "colors"))),
                 tmp_path / "b.ply")
    bad = random_gaussians(4)
    bad.means[2, 0] = float("nan")
    with pytest.raises(ValueError, match="nan"):
        save_ply(bad, tmp_path / "n.ply")
    assert not (tmp_path / "n.ply").exists()
    with pytest.raises(FileNotFoundError):
        load_ply(tmp_path / "missing.ply")


def test_quaternion_helpers_agree():
    g = random_gaussians(50, seed=1)
    R = quat_to_matrix(g.quats)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(50, 3, 3), atol=1e-5)
    q = matrix_to_quat(R)
    # w >= 0 convention; w from sqrt(1 + trace) loses ~1e-5 in fp32 when w is near 0
    assert torch.allclose(q, g.quats * torch.sign(g.quats[:, :1]), atol=1e-4)
    a, b = g.quats[:25], g.quats[25:]
    assert torch.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-5)


def test_transformed_moves_and_rescales():
    g = random_gaussians(10, seed=2)
    R = quat_to_matrix(torch.tensor([0.9, 0.1, -0.3, 0.2]))
    t = torch.tensor([1.0, -2.0, 0.5])
    h = g.transformed(2.0, t, R)
    assert torch.allclose(h.means, 2.0 * (g.means + t) @ R.T, atol=1e-5)
    assert torch.allclose(h.scales, 2.0 * g.scales)
    cov = lambda x: quat_to_matrix(x.quats) @ torch.diag_embed(x.scales**2) @ quat_to_matrix(x.quats).mT  # noqa: E731
    assert torch.allclose(cov(h), 4.0 * R @ cov(g) @ R.T, atol=1e-6)


def test_load_ply_reads_gsplats_export(tmp_path):
    """gsplat.export_splats (raw 3DGS parameters, no normals) is an independent writer of the format."""
    from gsplat import export_splats

    g = random_gaussians(20, seed=3)
    o = g.opacities
    export_splats(g.means, torch.log(g.scales), g.quats, torch.log(o / (1 - o)), ((g.colors - 0.5) / SH_C0)[:, None],
                  torch.zeros(20, 0, 3), format="ply", save_to=str(tmp_path / "gsplat.ply"))
    h = load_ply(tmp_path / "gsplat.ply")
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(h, name), getattr(g, name), rtol=1e-5, atol=1e-6), name
