"""Reports on a camera set: `describe` (one row per camera), `domain_mismatches` (a rig vs FaceLift's
cameras, graded with `MismatchThresholds`) and ray-embedding distances to reference cameras."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .calibration import distortion_displacement_px
from .cameras import Cameras, camera_axes, is_z_up, plucker_rays


def _deg(x: torch.Tensor) -> np.ndarray:
    return np.degrees(x.numpy())


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Angle between [V,3] directions, robust near 0 and 180 (atan2 of |a×b| and a·b)."""
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return _deg(torch.atan2(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1)))


def _roll_deg(right: torch.Tensor, fwd: torch.Tensor) -> np.ndarray:
    """[V] rotation about the optical axis from the level pose (right = fwd × Z), in degrees;
    positive turns the camera's x axis towards its y (down) axis. NaN when looking along Z."""
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(fwd)
    level = torch.linalg.cross(fwd, z)
    n = level.norm(dim=-1, keepdim=True)
    level = torch.where(n > 1e-9, level / n.clamp_min(1e-300), torch.full_like(level, float("nan")))
    return _deg(torch.atan2((torch.linalg.cross(level, right) * fwd).sum(-1), (level * right).sum(-1)))


def describe(cams: Cameras, target: Sequence[float] = (0.0, 0.0, 0.0)) -> pd.DataFrame:
    """One row per camera: where it sits relative to `target` (Z-up world) and how it is built.

    distance; elevation_deg (asin of the Z part of centre-target); azimuth_deg in [0,360)
    (atan2(y, x) of centre-target, rounded to 1e-9° so +X reads 0, not 359.999…);
    azimuth_gap_deg (to the next camera in increasing azimuth, cyclic); fx, fy, fy_over_fx;
    pp_dx_px, pp_dy_px (principal point minus image centre); hfov_deg, vfov_deg (nominal,
    2 atan(W/2fx)); up_x/y/z (world direction of the camera's -y axis) and up_angle_to_z_deg
    (equals the elevation for an un-rolled look-at camera); roll_deg (rotation about the optical
    axis away from level, see `_roll_deg`); lookat_error_deg (optical axis vs the direction to target).
    """
    tgt = torch.as_tensor(target, dtype=torch.float64).reshape(3)
    rel = cams.centers - tgt
    dist = rel.norm(dim=-1)
    right, down, fwd = camera_axes(cams)
    up = -down
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(up)
    az = np.mod(np.round(_deg(torch.atan2(rel[:, 1], rel[:, 0])), 9), 360.0)
    gaps = np.full(len(cams), 360.0)
    if len(cams) > 1:
        order = np.argsort(az, kind="stable")
        gaps[order] = np.mod(az[np.roll(order, -1)] - az[order], 360.0)
    names = cams.names if cams.names is not None else [f"view{i}" for i in range(len(cams))]
    return pd.DataFrame({
        "name": names,
        "distance": dist.numpy(),
        "elevation_deg": _deg(torch.asin(torch.clamp(rel[:, 2] / dist, -1.0, 1.0))),
        "azimuth_deg": az,
        "azimuth_gap_deg": gaps,
        "fx": cams.fx.numpy(), "fy": cams.fy.numpy(), "fy_over_fx": (cams.fy / cams.fx).numpy(),
        "pp_dx_px": (cams.cx - cams.width / 2).numpy(), "pp_dy_px": (cams.cy - cams.height / 2).numpy(),
        "hfov_deg": _deg(2 * torch.atan(cams.width / (2 * cams.fx))),
        "vfov_deg": _deg(2 * torch.atan(cams.height / (2 * cams.fy))),
        "up_x": up[:, 0].numpy(), "up_y": up[:, 1].numpy(), "up_z": up[:, 2].numpy(),
        "up_angle_to_z_deg": _angle_deg(up, z),
        "roll_deg": _roll_deg(right, fwd),
        "lookat_error_deg": _angle_deg(fwd, -rel),
    })


# --- comparing a rig with the standard cameras ---------------------------------------------------
@dataclass(frozen=True)
class MismatchThresholds:
    """(minor_at, major_at) per quantity for `domain_mismatches`, on the deviation |B-A| ('diff')
    or |B/A-1| ('ratio'): below minor_at is 'ok', below major_at 'minor', else 'major'."""

    n_views: tuple[float, float] = (1, 3)                     # views (diff)
    image_aspect: tuple[float, float] = (0.02, 0.15)          # W/H (ratio)
    hfov_deg: tuple[float, float] = (0.10, 0.30)              # (ratio) object size in the frame
    vfov_deg: tuple[float, float] = (0.10, 0.30)              # (ratio)
    pixel_aspect: tuple[float, float] = (0.005, 0.02)         # fy/fx furthest from 1 (diff)
    principal_point_offset: tuple[float, float] = (0.01, 0.05)  # fraction of image size (diff)
    elevation_mean_deg: tuple[float, float] = (5.0, 15.0)     # (diff)
    elevation_spread_deg: tuple[float, float] = (5.0, 20.0)   # max - min (diff)
    max_azimuth_gap_deg: tuple[float, float] = (15.0, 45.0)   # (diff)
    distance_rel_spread: tuple[float, float] = (0.03, 0.10)   # std/mean of distances (diff)
    lookat_error_max_deg: tuple[float, float] = (2.0, 8.0)    # (diff)
    roll_max_deg: tuple[float, float] = (2.0, 10.0)           # |roll| (diff)
    distortion_max_px: tuple[float, float] = (1.0, 5.0)       # (diff) at the image border
    up_axis_is_z: tuple[float, float] = (0.5, 0.5)            # 1/0 (diff): any difference is major


# quantity -> (unit, compare, what it does to FaceLift)
_MISMATCH_QUANTITIES: dict[str, tuple[str, str, str]] = {
    "n_views": ("views", "diff", "GS-LRM saw 6 (inference) or 32 (training) views"),
    "image_aspect": ("W/H", "ratio", "FaceLift images are square 512²: a crop must make them square"),
    "hfov_deg": ("deg", "ratio", "sets how large the object is in the frame"),
    "vfov_deg": ("deg", "ratio", "sets how large the object is in the frame"),
    "pixel_aspect": ("fy/fx", "diff", "FaceLift pixels are square"),
    "principal_point_offset": ("frac", "diff", "FaceLift's principal point is the image centre"),
    "elevation_mean_deg": ("deg", "diff", "FaceLift: 0° at inference, 20° in GS-LRM training"),
    "elevation_spread_deg": ("deg", "diff", "FaceLift cameras share one elevation"),
    "max_azimuth_gap_deg": ("deg", "diff", "largest unseen azimuth sector"),
    "distance_rel_spread": ("std/mean", "diff", "FaceLift cameras share one distance"),
    "lookat_error_max_deg": ("deg", "diff", "FaceLift cameras look exactly at the object centre"),
    "roll_max_deg": ("deg", "diff", "FaceLift cameras are level"),
    "distortion_max_px": ("px", "diff", "FaceLift cameras are ideal pinholes: undistort first"),
    "up_axis_is_z": ("bool", "diff", "FaceLift's world is Z-up"),
}



def _rig_summary(cams: Cameras, target: Sequence[float]) -> dict[str, float]:
    df = describe(cams, target)
    aspect = df["fy_over_fx"].to_numpy()
    d = df["distance"].to_numpy()
    return {
        "n_views": float(len(cams)),
        "image_aspect": cams.width / cams.height,
        "hfov_deg": float(df["hfov_deg"].mean()),
        "vfov_deg": float(df["vfov_deg"].mean()),
        "pixel_aspect": float(aspect[np.argmax(np.abs(aspect - 1))]),
        "principal_point_offset": float(max((df["pp_dx_px"].abs() / cams.width).max(),
                                            (df["pp_dy_px"].abs() / cams.height).max())),
        "elevation_mean_deg": float(df["elevation_deg"].mean()),
        "elevation_spread_deg": float(df["elevation_deg"].max() - df["elevation_deg"].min()),
        "max_azimuth_gap_deg": float(df["azimuth_gap_deg"].max()),
        "distance_rel_spread": float(d.std() / d.mean()),
        "lookat_error_max_deg": float(df["lookat_error_deg"].max()),
        "roll_max_deg": float(df["roll_deg"].abs().max()),
        "distortion_max_px": float(distortion_displacement_px(cams).max()),
        "up_axis_is_z": float(is_z_up(cams, target)[0]),
    }


def domain_mismatches(a: Cameras, b: Cameras, target_a: Sequence[float] = (0.0, 0.0, 0.0),
                      target_b: Sequence[float] = (0.0, 0.0, 0.0),
                      thresholds: MismatchThresholds = MismatchThresholds()) -> pd.DataFrame:
    """Where camera set B (e.g. a mouse rig) differs from A (e.g. `facelift_standard()`), graded.

    One row per quantity (see `MismatchThresholds`): quantity, unit, value_a, value_b, compare
    ('diff' or 'ratio'), delta (B-A or B/A), deviation (|B-A| or |B/A-1|), minor_at, major_at,
    severity ('ok'/'minor'/'major'), note. Only scale-free quantities: A and B may use different
    units (FaceLift units vs mm). Both worlds are taken as Z-up; `up_axis_is_z` says if not.
    """
    sa, sb = _rig_summary(a, target_a), _rig_summary(b, target_b)
    rows = []
    for q, (unit, compare, note) in _MISMATCH_QUANTITIES.items():
        va, vb = sa[q], sb[q]
        if compare == "ratio":
            delta = vb / va
            dev = abs(delta - 1)
        else:
            delta = vb - va
            dev = abs(delta)
        minor_at, major_at = getattr(thresholds, q)
        severity = "ok" if dev < minor_at else ("minor" if dev < major_at else "major")
        rows.append(dict(quantity=q, unit=unit, value_a=va, value_b=vb, compare=compare, delta=delta,
                         deviation=dev, minor_at=minor_at, major_at=major_at, severity=severity, note=note))
    return pd.DataFrame(rows)


def ray_distance_matrix(cams: Cameras, ref: Cameras, size: int = 32) -> torch.Tensor:
    """[V,R] mean over a size x size pixel grid of the L2 distance between the facelift ray embeddings
    ([d, o + (-o·d) d], 6 numbers per pixel) of camera v and reference camera r.

    Both sets must be in the same world units (normalise a rig with `similarity_normalize` first);
    each image is resampled to size x size, so the grids compare by relative image position.
    """
    e = plucker_rays(cams, "facelift", height=size, width=size, dtype=torch.float64).flatten(2)  # [V,6,P]
    r = plucker_rays(ref, "facelift", height=size, width=size, dtype=torch.float64).flatten(2)   # [R,6,P]
    return (e[:, None] - r[None]).norm(dim=2).mean(-1)


def ray_distance_to_reference(cams: Cameras, ref: Cameras, size: int = 32) -> torch.Tensor:
    """[V] per view, the ray-embedding distance (`ray_distance_matrix`) to the nearest reference camera:
    0 for a view that sees exactly like one of the standard views, growing as its rays move away."""
    return ray_distance_matrix(cams, ref, size).min(dim=1).values
