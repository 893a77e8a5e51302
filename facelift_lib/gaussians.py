"""The 3D Gaussians container every stage passes around (rig ground truth, GS-LRM output).

Activated values (the model applies its activations; the renderer takes these as they are):
means [N,3], quats [N,4] wxyz normalised, scales [N,3] linear, opacities [N] in [0,1],
colors [N,3] in [0,1] (SH degree 0). A leading batch dim [B,N,...] is allowed where stated.
PLY in/out (standard 3DGS layout) lives in this module too.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

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
