"""The 3D Gaussians container every stage passes around (rig ground truth, GS-LRM output).

Activated values (the model applies its activations; the renderer takes these as they are):
means [N,3], quats [N,4] wxyz normalised, scales [N,3] linear, opacities [N] in [0,1],
colors [N,3] in [0,1] (SH degree 0). A leading batch dim [B,N,...] is allowed where stated.
PLY in/out (standard 3DGS layout) lives in this module too, and the library's rotation helpers (quaternions,
rotation about Z, Rodrigues): the lowest module that needs them, so render, the mouse, synthetic views and
the GS-LRM trainer share one definition each.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch


@dataclass
class Gaussians:
    means: torch.Tensor      # [N,3]
    quats: torch.Tensor      # [N,4] wxyz
    scales: torch.Tensor     # [N,3]
    opacities: torch.Tensor  # [N]
    colors: torch.Tensor     # [N,3]

    def __len__(self) -> int:
        return self.means.shape[-2]

    def to(self, *args, **kwargs) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def select(self, keep: torch.Tensor) -> "Gaussians":
        """Subset by a boolean mask or index tensor over N (unbatched)."""
        return Gaussians(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def __getitem__(self, b: int) -> "Gaussians":
        """Sample b of a batched [B,N,...] set."""
        return Gaussians(**{f.name: getattr(self, f.name)[b] for f in fields(self)})

    @staticmethod
    def cat(items: list["Gaussians"]) -> "Gaussians":
        return Gaussians(**{f.name: torch.cat([getattr(g, f.name) for g in items], 0) for f in fields(Gaussians)})

    def transformed(self, scale: float, translation: torch.Tensor, rotation: torch.Tensor | None = None) -> "Gaussians":
        """Similarity transform x' = scale * R (x + translation) (e.g. rig mm -> FaceLift units).

        Scales multiply by `scale`; quats rotate by R when given.
        """
        t = torch.as_tensor(translation, dtype=self.means.dtype, device=self.means.device)
        means = self.means + t
        quats = self.quats
        if rotation is not None:
            R = torch.as_tensor(rotation, dtype=self.means.dtype, device=self.means.device)
            means = means @ R.T
            quats = quat_multiply(matrix_to_quat(R).expand_as(self.quats), self.quats)
        return Gaussians(means=means * scale, quats=quats, scales=self.scales * scale,
                         opacities=self.opacities, colors=self.colors)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of wxyz quaternions [...,4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix [...,3,3] -> wxyz quaternion [...,4] (w >= 0)."""
    m = R
    w = torch.sqrt(torch.clamp(1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2], min=1e-12)) / 2
    x = torch.sqrt(torch.clamp(1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], min=0)) / 2
    y = torch.sqrt(torch.clamp(1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], min=0)) / 2
    z = torch.sqrt(torch.clamp(1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], min=0)) / 2
    x = torch.copysign(x, m[..., 2, 1] - m[..., 1, 2])
    y = torch.copysign(y, m[..., 0, 2] - m[..., 2, 0])
    z = torch.copysign(z, m[..., 1, 0] - m[..., 0, 1])
    return torch.nn.functional.normalize(torch.stack([w, x, y, z], -1), dim=-1)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """wxyz quaternion [...,4] (any norm) -> rotation matrix [...,3,3]."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotations about +Z (x turns towards y) by angle [...] radians -> [...,3,3], in angle's dtype."""
    c, s = angle.cos(), angle.sin()
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(angle.shape + (3, 3))


def axis_angle_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotations by angle [...] radians about axis [...,3] (any norm; the two broadcast) -> [...,3,3],
    right-handed (counter-clockwise looking down the axis)."""
    axis, angle = torch.broadcast_tensors(torch.nn.functional.normalize(axis, dim=-1), angle[..., None])
    angle = angle[..., 0]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(x.shape + (3, 3))
    s, c = angle.sin()[..., None, None], angle.cos()[..., None, None]
    return torch.eye(3, dtype=axis.dtype, device=axis.device) + s * Kx + (1 - c) * (Kx @ Kx)


# --- PLY (standard 3DGS layout, what splat viewers open) ----------------------------------------
SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic, colour = SH_C0 * f_dc + 0.5
_PLY_FIELDS = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
               + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def save_ply(g: Gaussians, path: str | Path) -> Path:
    """Write unbatched gaussians as a binary little-endian 3DGS PLY (SH degree 0).

    Stored as 3DGS does: normals 0, f_dc = (colour - 0.5) / SH_C0, opacity as a logit, log scales,
    rot_0..3 = quaternion wxyz. Opacities are clipped to [1e-6, 1 - 1e-6] so the logit stays finite.
    The file is written to a temporary name and renamed, so a crash never leaves half a PLY.
    """
    from plyfile import PlyData, PlyElement

    path = Path(path)
    if g.means.ndim != 2:
        raise ValueError(f"save_ply({path}): gaussians must be unbatched [N,...], got means "
                         f"{list(g.means.shape)}; save each sample g[b] separately")
    d = g.detach().to(device="cpu", dtype=torch.float64)
    if (d.scales <= 0).any():
        raise ValueError(f"save_ply({path}): {int((d.scales <= 0).any(-1).sum())} gaussians have scales <= 0; "
                         "scales must be linear and positive (the PLY stores log scales)")
    bad = ~torch.cat([d.means, d.quats, d.scales, d.opacities[:, None], d.colors], 1).isfinite().all(1)
    if bad.any():
        raise ValueError(f"save_ply({path}): {int(bad.sum())} gaussians have nan/inf values "
                         f"(first index {int(bad.nonzero()[0, 0])}); fix or drop them before saving")
    o = d.opacities.clamp(1e-6, 1 - 1e-6)
    cols = torch.cat([d.means, torch.zeros_like(d.means), (d.colors - 0.5) / SH_C0,
                      torch.log(o / (1 - o))[:, None], torch.log(d.scales), d.quats], 1).float().numpy()
    vertex = np.empty(len(cols), dtype=[(name, "<f4") for name in _PLY_FIELDS])
    for i, name in enumerate(_PLY_FIELDS):
        vertex[name] = cols[:, i]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(str(tmp))
    tmp.replace(path)
    return path


def load_ply(path: str | Path, drop_higher_sh: bool = False) -> Gaussians:
    """Read a 3DGS PLY into activated float32 Gaussians (inverse of `save_ply`).

    colour = SH_C0 * f_dc + 0.5 (not clipped), opacity = sigmoid, scale = exp, quats normalised wxyz.
    A PLY with view-dependent colour (f_rest_*) is refused unless `drop_higher_sh=True`, because
    this workbook keeps SH degree 0 only.
    """
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_ply: no such file {path}")
    ply = PlyData.read(str(path))
    if "vertex" not in ply:
        raise ValueError(f"load_ply({path}): no 'vertex' element; not a gaussian-splat PLY")
    v = ply["vertex"].data
    names = v.dtype.names
    needed = [n for n in _PLY_FIELDS if not n.startswith("n")]
    missing = [n for n in needed if n not in names]
    if missing:
        raise ValueError(f"load_ply({path}): missing properties {missing}; expected the 3DGS layout "
                         f"{_PLY_FIELDS}")
    if any(n.startswith("f_rest_") for n in names) and not drop_higher_sh:
        raise ValueError(f"load_ply({path}): has view-dependent SH (f_rest_*); pass drop_higher_sh=True to "
                         "keep only the degree-0 colour")
    col = lambda *keys: torch.from_numpy(np.stack([np.asarray(v[k], dtype=np.float64) for k in keys], 1))  # noqa: E731
    means = col("x", "y", "z")
    colors = col("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5
    opacities = torch.sigmoid(col("opacity")[:, 0])
    scales = torch.exp(col("scale_0", "scale_1", "scale_2"))
    quats = torch.nn.functional.normalize(col("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1)
    return Gaussians(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors).to(torch.float32)
