"""The procedural mouse: an adult C57BL/6-sized mouse made of 3D gaussians, posed per frame, and how it wanders.

No real mouse data can be downloaded here, so this is the embedded default that runs anywhere, with a
4D ground truth: the same N gaussians (gaussian i is the same bit of mouse in every frame) posed per frame.
The virtual rig that films it and the rig folder it writes are `synthetic_rig`; the rig folder format is `rig`.

Units are millimetres, world Z-up, the arena floor is z = 0 and the arena centre is the origin.
The mouse is built in a body frame (x forward, y left, z up, origin on the floor under the trunk centre),
deformed (head turn, body bend, rearing), then scaled, turned to its heading and placed at (x, y).

Public API: `MousePose`, `MOUSE_PARTS`, `FUR_COLORS`, `mouse_gaussians`, `mouse_gaussians_with_parts`, `body_center`,
`MotionParams`, `ARENA_RADIUS_MM`, `arena_params`, `mouse_trajectory`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from facelift_lib.gaussians import Gaussians, axis_angle_matrix, matrix_to_quat, rotation_z

# --- the mouse -------------------------------------------------------------------------------------------
MOUSE_PARTS = ("trunk", "head", "snout", "nose", "ear", "eye", "limb", "foot", "tail")
_HEAD_GROUP = ("head", "snout", "nose", "ear", "eye")
FUR_COLORS = {"brown": (0.42, 0.31, 0.21), "black": (0.10, 0.09, 0.085), "white": (0.90, 0.88, 0.84)}
_PINK = (0.86, 0.62, 0.60)
_EYE = (0.02, 0.02, 0.02)

# Body-frame landmarks at scale 1 (mm): an adult C57BL/6, nose tip to tail base ~91 mm, tail ~85 mm.
_TRUNK_CENTER, _TRUNK_RADII = (0.0, 0.0, 17.0), (32.0, 15.0, 13.0)
_SPINE_REAR, _SPINE_FRONT = -32.0, 26.0   # the stretch of the trunk that bends; beyond it parts are rigid
_NECK = (26.0, 0.0, 20.0)                 # head turns about this point
_HIP = (-20.0, 0.0, 8.0)                  # rearing pitches the body up about this point
_TAIL_LENGTH = 85.0
_TAIL_BASE_X = -31.0
_REAR_MAX_DEG = 70.0                      # body pitch at rearing = 1 (a mouse rears to ~60-80°)


@dataclass
class MousePose:
    """One frame's pose. Angles in degrees; positive head_pitch lifts the nose, positive yaw/bend turn left."""

    x: float = 0.0               # body origin on the floor, world mm
    y: float = 0.0
    heading_deg: float = 0.0     # 0 = facing +X, 90 = facing +Y
    bend_deg: float = 0.0        # yaw of the shoulders relative to the rump (C-shaped trunk)
    head_yaw_deg: float = 0.0
    head_pitch_deg: float = 0.0
    tail_curve_deg: float = 0.0  # total sideways turn of the tail from base to tip
    tail_wave_deg: float = 0.0   # amplitude of an S-shaped sway on top of the curve
    rearing: float = 0.0         # 0 = on four paws, 1 = fully reared on the hind legs (body pitched 70° up)
    scale: float = 1.0           # 1 = adult C57BL/6, ~91 mm nose to tail base, tail ~85 mm
    fur: str = "brown"           # 'brown' | 'black' | 'white'


def _ellipsoid_surface(n: int, radii: tuple[float, float, float], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points on an axis-aligned ellipsoid at the origin -> (points [n,3], outward normals [n,3])."""
    u = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=-1)
    r = torch.tensor(radii, dtype=torch.float64)
    return u * r, torch.nn.functional.normalize(u / r, dim=-1)


def _ellipsoid_area(radii: tuple[float, float, float]) -> float:
    """Knud Thomsen's approximation (within ~1%)."""
    a, b, c = radii
    p = 1.6075
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def _tube_surface(n: int, centerline, radius, gen: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """n points on a tube around `centerline(u [n]) -> [n,3]`, u in [0,1], radius(u) -> [n].

    Returns (points [n,3], normals [n,3], tangents [n,3], u [n]). The tube frame uses world z as reference
    (our tubes are never vertical-and-twisted enough for that to matter).
    """
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    phi = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
    c = centerline(u)
    eps = 1e-4
    tangent = torch.nn.functional.normalize(centerline((u + eps).clamp(max=1)) - centerline((u - eps).clamp(min=0)), dim=-1)
    ref = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(tangent).clone()
    ref[tangent[:, 2].abs() > 0.9] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    side = torch.nn.functional.normalize(torch.linalg.cross(tangent, ref), dim=-1)
    up = torch.linalg.cross(side, tangent)
    normal = phi.cos()[:, None] * up + phi.sin()[:, None] * side
    return c + radius(u)[:, None] * normal, normal, tangent, u


def _frame_from_normal(normal: torch.Tensor, tangent: torch.Tensor | None = None) -> torch.Tensor:
    """Rotation matrices [n,3,3] whose 3rd column is the normal (the splat's thin axis), 1st column ~ tangent."""
    x_axis = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    tangent = x_axis.expand_as(normal).clone() if tangent is None else tangent.to(normal).clone()
    parallel = (torch.nn.functional.normalize(tangent, dim=-1) * normal).sum(-1).abs() > 0.9
    tangent[parallel] = torch.where(normal[parallel, :1].abs() > 0.9, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
                                    x_axis)
    t1 = torch.nn.functional.normalize(tangent - (tangent * normal).sum(-1, keepdim=True) * normal, dim=-1)
    t2 = torch.linalg.cross(normal, t1)
    return torch.stack([t1, t2, normal], -1)


@dataclass
class _Canonical:
    """The unposed mouse: body-frame splats, their spine coordinate and part id."""

    points: torch.Tensor   # [N,3]
    frames: torch.Tensor   # [N,3,3] splat axes (3rd = surface normal)
    scales: torch.Tensor   # [N,3]
    spine: torch.Tensor    # [N] x along the spine where the bend is evaluated
    part: torch.Tensor     # [N] index into MOUSE_PARTS
    tail_u: torch.Tensor   # [N] position along the tail 0..1 (0 elsewhere)


# Fractions of the gaussian budget per part (the trunk takes the remainder).
_PART_SHARE = {"head": 0.13, "snout": 0.05, "nose": 0.006, "ear": 0.06, "eye": 0.016, "limb": 0.10, "foot": 0.04,
               "tail": 0.15}


def _splats(points: torch.Tensor, normals: torch.Tensor, area: float, tangent: torch.Tensor | None = None,
            along: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat splats covering `area` mm² with len(points) gaussians: (points, frames, scales [n,3]).

    Tangential sigma ~0.7x the sample spacing so neighbours overlap into an opaque skin; `along`
    stretches the first axis (e.g. along the tail).
    """
    spacing = math.sqrt(area / max(len(points), 1))
    s = 0.7 * spacing
    scales = torch.tensor([s * along, s, max(0.15 * s, 0.08)], dtype=torch.float64).expand(len(points), 3).clone()
    return points, _frame_from_normal(normals, tangent), scales


def _tail_centerline(u: torch.Tensor) -> torch.Tensor:
    """[n] in 0..1 -> [n,3] unposed tail axis: from the rump (z=9) down onto the floor by u=0.2, then along -x."""
    drop = torch.where(u < 0.2, 0.5 * (1 + torch.cos(math.pi * u / 0.2)), torch.zeros_like(u))
    return torch.stack([_TAIL_BASE_X - _TAIL_LENGTH * u, torch.zeros_like(u), _tail_radius(u) + 6.4 * drop], -1)


def _tail_radius(u: torch.Tensor) -> torch.Tensor:
    return 2.6 - 1.8 * u


def _canonical_mouse(n: int, gen: torch.Generator) -> _Canonical:
    """Sample the unposed adult mouse with exactly n gaussians (n >= 500)."""
    if n < 500:
        raise ValueError(f"mouse_gaussians: n={n} is too few to cover the mouse; use n >= 500 (smoke: ~4000)")
    counts = {p: max(int(round(f * n)), 8) for p, f in _PART_SHARE.items()}
    counts["trunk"] = n - sum(counts.values())
    pieces: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(part: str, pts, frames, scales, spine, tail_u=None):
        pieces.append((part, pts, frames, scales, spine, torch.zeros(len(pts), dtype=torch.float64) if tail_u is None else tail_u))

    def split(total: int, k: int) -> list[int]:
        return [total // k + (1 if i < total % k else 0) for i in range(k)]

    # Trunk: an ellipsoid that is wider at the hips than at the shoulders.
    m = counts["trunk"]
    p, nrm = _ellipsoid_surface(m, _TRUNK_RADII, gen)
    taper = 1 - 0.12 * p[:, 0] / _TRUNK_RADII[0]
    p[:, 1:] *= taper[:, None]
    p += torch.tensor(_TRUNK_CENTER, dtype=torch.float64)
    add("trunk", *_splats(p, nrm, _ellipsoid_area(_TRUNK_RADII), tangent=torch.tensor([1.0, 0, 0]).expand(m, 3)),
        spine=p[:, 0].clamp(_SPINE_REAR, _SPINE_FRONT))

    def blob(part: str, m: int, center, radii):
        p, nrm = _ellipsoid_surface(m, radii, gen)
        p = p + torch.tensor(center, dtype=torch.float64)
        spine = torch.full((m,), _SPINE_FRONT, dtype=torch.float64)
        return p, nrm, _ellipsoid_area(radii), spine

    for part, center, radii in (("head", (36.0, 0.0, 21.0), (13.0, 10.0, 9.0)),
                                ("snout", (50.0, 0.0, 18.5), (9.0, 5.5, 5.0)),
                                ("nose", (58.5, 0.0, 18.5), (1.6, 2.0, 1.6))):
        p, nrm, area, spine = blob(part, counts[part], center, radii)
        add(part, *_splats(p, nrm, area), spine=spine)

    # Eyes: dark beads half sunk into the head; ears: thin discs facing forward and out.
    for side, m in zip((1.0, -1.0), split(counts["eye"], 2)):
        p, nrm, area, spine = blob("eye", m, (44.0, 7.0 * side, 24.0), (2.0, 2.0, 2.0))
        add("eye", *_splats(p, nrm, area), spine=spine)
    for side, m in zip((1.0, -1.0), split(counts["ear"], 2)):
        radii = (0.9, 6.0, 6.5)
        p, nrm = _ellipsoid_surface(m, radii, gen)
        R = axis_angle_matrix(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([math.radians(35.0 * side)]))[0]
        R = axis_angle_matrix(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([math.radians(-25.0 * side)]))[0] @ R
        p = p @ R.T + torch.tensor([31.0, 8.5 * side, 30.0], dtype=torch.float64)
        add("ear", *_splats(p, nrm @ R.T, _ellipsoid_area(radii)), spine=torch.full((m,), _SPINE_FRONT, dtype=torch.float64))

    # Limbs: tapered tubes from the belly to the floor; hind legs have thick thighs. Feet: flat pink pads.
    legs = [(20.0, 7.0, 3.0, 2.0, 0.0), (-20.0, 10.0, 5.0, 2.2, 4.0)]  # x, |y|, top radius, bottom radius, foot dx
    limb_counts = split(counts["limb"], 4)
    foot_counts = split(counts["foot"], 4)
    k = 0
    for x, y, r0, r1, dx in legs:
        for side in (1.0, -1.0):
            top = torch.tensor([x, y * side, 12.0], dtype=torch.float64)
            bottom = torch.tensor([x + dx * 0.5, (y + 1.0) * side, 2.0], dtype=torch.float64)
            line = lambda u, top=top, bottom=bottom: top + u[:, None] * (bottom - top)  # noqa: E731
            rad = lambda u, r0=r0, r1=r1: r0 + u * (r1 - r0)  # noqa: E731
            p, nrm, tng, _ = _tube_surface(limb_counts[k], line, rad, gen)
            area = math.pi * (r0 + r1) * float((bottom - top).norm())
            add("limb", *_splats(p, nrm, area, tangent=tng), spine=p[:, 0].clamp(_SPINE_REAR, _SPINE_FRONT))
            p, nrm, area, _ = blob("foot", foot_counts[k], (x + dx + 2.5, (y + 1.0) * side, 1.0), (4.0, 2.0, 1.0))
            add("foot", *_splats(p, nrm, area), spine=p[:, 0].clamp(_SPINE_REAR, _SPINE_FRONT))
            k += 1

    # Tail: leaves the rump, drops to the floor within the first fifth, then lies along -x (posing curls it).
    p, nrm, tng, tail_u = _tube_surface(counts["tail"], _tail_centerline, _tail_radius, gen)
    add("tail", *_splats(p, nrm, math.pi * (2.6 + 0.8) * _TAIL_LENGTH, tangent=tng, along=1.6),
        spine=torch.full((len(p),), _SPINE_REAR, dtype=torch.float64), tail_u=tail_u)

    part_ids = torch.cat([torch.full((len(pc[1]),), MOUSE_PARTS.index(pc[0]), dtype=torch.long) for pc in pieces])
    return _Canonical(points=torch.cat([pc[1] for pc in pieces]), frames=torch.cat([pc[2] for pc in pieces]),
                      scales=torch.cat([pc[3] for pc in pieces]), spine=torch.cat([pc[4] for pc in pieces]),
                      part=part_ids, tail_u=torch.cat([pc[5] for pc in pieces]))


def _mouse_colors(part: torch.Tensor, fur: str, gen: torch.Generator) -> torch.Tensor:
    """[N,3] colours: fur with per-gaussian noise, pinkish ears/nose/feet/tail, black eyes."""
    if fur not in FUR_COLORS:
        raise ValueError(f"MousePose.fur must be one of {sorted(FUR_COLORS)}, got {fur!r}")
    n = len(part)
    noise = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.025 + torch.randn(n, 1, generator=gen, dtype=torch.float64) * 0.04
    colors = torch.tensor(FUR_COLORS[fur], dtype=torch.float64).expand(n, 3) + noise
    pink = torch.tensor(_PINK, dtype=torch.float64)
    if fur == "black":  # dark mice have greyer ears and tails
        pink = 0.55 * pink + 0.45 * torch.tensor(FUR_COLORS["black"], dtype=torch.float64)
    for name in ("ear", "nose", "foot", "tail"):
        sel = part == MOUSE_PARTS.index(name)
        colors[sel] = pink + 0.6 * noise[sel]
    colors[part == MOUSE_PARTS.index("eye")] = torch.tensor(_EYE, dtype=torch.float64)
    return colors.clamp(0, 1)


def _apply(points: torch.Tensor, frames: torch.Tensor, R: torch.Tensor, pivot: torch.Tensor,
           new_pivot: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate points [n,3] and splat frames [n,3,3] by per-point R [n,3,3] about pivot(s) [n,3] or [3]."""
    new_pivot = pivot if new_pivot is None else new_pivot
    return (R @ (points - pivot)[..., None])[..., 0] + new_pivot, R @ frames


def _pose_mouse(c: _Canonical, pose: MousePose) -> tuple[torch.Tensor, torch.Tensor]:
    """Deform the canonical mouse to `pose` -> (world points [N,3], splat frames [N,3,3])."""
    pts, frames = c.points.clone(), c.frames.clone()
    f64 = dict(dtype=torch.float64)
    head = torch.zeros(len(pts), dtype=torch.bool)
    for name in _HEAD_GROUP:
        head |= c.part == MOUSE_PARTS.index(name)
    tail = c.part == MOUSE_PARTS.index("tail")

    # 1. Head: yaw about z, then pitch (nose up) about the lateral axis, through the neck.
    Rh = rotation_z(torch.tensor([math.radians(pose.head_yaw_deg)], **f64)) @ \
        axis_angle_matrix(torch.tensor([0.0, -1.0, 0.0], **f64), torch.tensor([math.radians(pose.head_pitch_deg)], **f64))
    neck = torch.tensor(_NECK, **f64)
    pts[head], frames[head] = _apply(pts[head], frames[head], Rh.expand(int(head.sum()), 3, 3), neck)

    # 2. Tail: the axis turns by angle(u) = curve*u + wave*sin(2πu) as it goes; integrating the heading
    #    keeps it connected and its length fixed. Each splat keeps its offset from the axis, turned along.
    if tail.any():
        u = c.tail_u[tail]
        curve, wave = math.radians(pose.tail_curve_deg), math.radians(pose.tail_wave_deg)
        angle = lambda s: curve * s + wave * torch.sin(2 * math.pi * s)  # noqa: E731
        grid = torch.linspace(0, 1, 1025, **f64)
        mids = 0.5 * (grid[1:] + grid[:-1])
        step = torch.stack([-torch.cos(angle(mids)), -torch.sin(angle(mids))], -1) * (_TAIL_LENGTH / (len(grid) - 1))
        path = torch.cat([torch.zeros(1, 2, **f64), step.cumsum(0)])  # [G,2] axis offsets from the tail base
        axis_old = _tail_centerline(u)
        axis_new = axis_old.clone()
        axis_new[:, 0] = _TAIL_BASE_X
        axis_new[:, :2] += path[(u * (len(grid) - 1)).round().long()]
        R = rotation_z(angle(u))
        pts[tail], frames[tail] = _apply(pts[tail], frames[tail], R, axis_old, axis_new)

    # 3. Bend: the trunk follows a circular arc in the floor plane; parts beyond the arc move rigidly.
    kappa = math.radians(pose.bend_deg) / (_SPINE_FRONT - _SPINE_REAR)
    s = c.spine
    theta = kappa * s
    if abs(kappa) > 1e-9:
        arc = torch.stack([torch.sin(theta) / kappa, (1 - torch.cos(theta)) / kappa, torch.zeros_like(s)], -1)
    else:
        arc = torch.stack([s, torch.zeros_like(s), torch.zeros_like(s)], -1)
    on_spine = torch.stack([s, torch.zeros_like(s), torch.zeros_like(s)], -1)
    pts, frames = _apply(pts, frames, rotation_z(theta), on_spine, arc)

    # 4. Rearing: everything ahead of the hips pitches nose-up about the (bent) hip's lateral axis,
    #    ramping in over the rump so the skin does not tear; hind legs and tail stay on the floor.
    if pose.rearing > 0:
        hip_s = _HIP[0]
        hip_heading = kappa * hip_s
        hip = torch.tensor([math.sin(hip_heading) / kappa if abs(kappa) > 1e-9 else hip_s,
                            (1 - math.cos(hip_heading)) / kappa if abs(kappa) > 1e-9 else 0.0, _HIP[2]], **f64)
        axis = torch.tensor([math.sin(hip_heading), -math.cos(hip_heading), 0.0], **f64)  # -lateral: +angle = nose up
        ramp = ((c.spine - (hip_s - 8.0)) / 20.0).clamp(0, 1)
        ramp = ramp * ramp * (3 - 2 * ramp)
        fixed = tail | (c.part == MOUSE_PARTS.index("foot")) & (c.points[:, 0] < 0) | \
            (c.part == MOUSE_PARTS.index("limb")) & (c.points[:, 0] < 0)
        ramp[fixed] = 0.0
        angle = ramp * math.radians(_REAR_MAX_DEG) * pose.rearing
        pts, frames = _apply(pts, frames, axis_angle_matrix(axis, angle), hip)

    # 5. Place: scale about the body origin, turn to the heading, move to (x, y).
    Rw = rotation_z(torch.tensor([math.radians(pose.heading_deg)], **f64))[0]
    pts = pose.scale * pts @ Rw.T + torch.tensor([pose.x, pose.y, 0.0], **f64)
    frames = Rw @ frames
    return pts, frames


def mouse_gaussians_with_parts(pose: MousePose, n: int = 4000, seed: int = 0) -> tuple[Gaussians, torch.Tensor]:
    """The posed mouse (world mm, float32) and each gaussian's part index into MOUSE_PARTS [N].

    The unposed samples and colour noise depend only on (n, seed), so gaussian i is the same bit of
    mouse in every pose: a trajectory of poses is a 4D ground truth with correspondences.
    """
    gen = torch.Generator().manual_seed(int(seed))
    canon = _canonical_mouse(n, gen)
    colors = _mouse_colors(canon.part, pose.fur, gen)
    pts, frames = _pose_mouse(canon, pose)
    opac = torch.full((n,), 0.95, dtype=torch.float64)
    g = Gaussians(means=pts, quats=matrix_to_quat(frames), scales=canon.scales * pose.scale,
                  opacities=opac, colors=colors)
    return g.to(torch.float32), canon.part


def mouse_gaussians(pose: MousePose, n: int = 4000, seed: int = 0) -> Gaussians:
    """The posed procedural mouse as N gaussians in world mm (see `mouse_gaussians_with_parts`)."""
    return mouse_gaussians_with_parts(pose, n, seed)[0]


def body_center(g: Gaussians, part: torch.Tensor) -> torch.Tensor:
    """[3] centroid of the trunk gaussians: the point preprocessing should centre on."""
    return g.means[part == MOUSE_PARTS.index("trunk")].double().mean(0)


# --- motion ----------------------------------------------------------------------------------------------
@dataclass
class MotionParams:
    """How the mouse wanders (per frame; one frame ~0.1 s of real motion, so short clips still move).

    Where: a real open-field mouse spends much of its time along the walls (thigmotaxis), and real recordings
    show it near or across the image border in a quarter of the views (markerless_mouse_1: 36 of 144 raw
    masks touch the border). `max_radius_mm` is the arena: with the default the mouse wanders out to 110 mm
    from the centre, where the rig's views reach their border (~24 % of views cross it);
    `arena_params(radius)` scales both radii.
    """

    speed_mm: float = 7.0          # mean walking speed, mm per frame
    max_turn_deg: float = 8.0      # wandering turn rate, degrees per frame
    soft_radius_mm: float = 70.0   # beyond this the mouse starts turning back toward the centre
    max_radius_mm: float = 110.0   # hard limit for the body origin's distance from the arena centre (the wall)
    rear_gap_frames: tuple[int, int] = (12, 40)
    rear_duration_frames: tuple[int, int] = (7, 14)


ARENA_RADIUS_MM = MotionParams.max_radius_mm  # the default arena (make_rig_dataset's arena_radius_mm)


def arena_params(radius_mm: float) -> MotionParams:
    """MotionParams for an arena of `radius_mm` (the body origin's largest distance from the centre; the mouse
    turns back from 0.64 of it). Smaller: the mouse stays near the middle of every view; larger: it leaves views."""
    if not radius_mm > 0:
        raise ValueError(f"arena_params: radius_mm must be > 0, got {radius_mm}")
    return MotionParams(soft_radius_mm=radius_mm * MotionParams.soft_radius_mm / MotionParams.max_radius_mm,
                        max_radius_mm=float(radius_mm))


def _smooth_noise(seed: int, n_frames: int, period: float, n_terms: int = 3) -> torch.Tensor:
    """[n_frames] smooth zero-mean noise (~unit std): a few sinusoids with random periods around `period`.

    A function of (seed, frame) only, so a longer sequence starts with the same frames as a shorter one.
    """
    gen = torch.Generator().manual_seed(int(seed))
    periods = period * (0.5 + 1.5 * torch.rand(n_terms, generator=gen, dtype=torch.float64))
    phases = 2 * math.pi * torch.rand(n_terms, generator=gen, dtype=torch.float64)
    amps = torch.randn(n_terms, generator=gen, dtype=torch.float64) * math.sqrt(2.0 / n_terms)
    t = torch.arange(n_frames, dtype=torch.float64)[:, None]
    return (amps * torch.sin(2 * math.pi * t / periods + phases)).sum(-1)


def _rearing_profile(seed: int, n_frames: int, p: MotionParams) -> torch.Tensor:
    """[n_frames] in [0,1]: smooth rearing episodes (sin² bumps) at random onsets."""
    gen = torch.Generator().manual_seed(int(seed))
    out = torch.zeros(n_frames, dtype=torch.float64)
    t = torch.arange(n_frames, dtype=torch.float64)
    onset = float(torch.randint(2, 10, (1,), generator=gen))
    while onset < n_frames:
        dur = float(torch.randint(p.rear_duration_frames[0], p.rear_duration_frames[1] + 1, (1,), generator=gen))
        peak = 0.6 + 0.4 * float(torch.rand(1, generator=gen, dtype=torch.float64))
        phase = ((t - onset) / dur).clamp(0, 1)
        out = torch.maximum(out, peak * torch.sin(math.pi * phase) ** 2)
        onset += dur + float(torch.randint(p.rear_gap_frames[0], p.rear_gap_frames[1] + 1, (1,), generator=gen))
    return out


def mouse_trajectory(n_frames: int, seed: int = 0, fur: str = "brown", scale: float = 1.0,
                     params: MotionParams | None = None) -> list[MousePose]:
    """Smooth wandering poses: walks and turns within `params.max_radius_mm` of the arena centre (default 110 mm:
    often near the image border, as in real recordings), rears now and then (body up to 70°), bends its spine
    (±40°), turns and lifts its head (yaw ±45°, pitch), curves and sways its tail. Deterministic for a seed;
    frame t does not depend on n_frames."""
    p = params or MotionParams()
    base = int(seed) * 1009
    noise = {k: _smooth_noise(base + i, n_frames, period) for i, (k, period) in enumerate(
        [("speed", 20.0), ("turn", 14.0), ("head_yaw", 9.0), ("head_pitch", 11.0), ("tail", 16.0), ("wave", 7.0),
         ("bend", 10.0)])}
    rear = _rearing_profile(base + 100, n_frames, p)
    gen = torch.Generator().manual_seed(base + 200)
    r0 = 0.6 * p.max_radius_mm * float(torch.rand(1, generator=gen, dtype=torch.float64)) ** 0.5
    a0 = 2 * math.pi * float(torch.rand(1, generator=gen, dtype=torch.float64))
    x, y = r0 * math.cos(a0), r0 * math.sin(a0)
    heading = 2 * math.pi * float(torch.rand(1, generator=gen, dtype=torch.float64))

    poses = []
    for t in range(n_frames):
        turn = math.radians(p.max_turn_deg) * float(noise["turn"][t])
        r = math.hypot(x, y)
        if r > p.soft_radius_mm:  # steer back toward the centre, harder the further out
            err = math.remainder(math.atan2(-y, -x) - heading, 2 * math.pi)
            turn += 0.3 * min((r - p.soft_radius_mm) / (p.max_radius_mm - p.soft_radius_mm), 1.0) * err
        turn = max(-math.radians(25.0), min(math.radians(25.0), turn))
        bend = max(-40.0, min(40.0, 1.2 * math.degrees(turn) + 12.0 * float(noise["bend"][t])))
        poses.append(MousePose(
            x=x, y=y, heading_deg=math.degrees(heading) % 360.0, bend_deg=bend,
            head_yaw_deg=max(-45.0, min(45.0, 28.0 * float(noise["head_yaw"][t]) + 0.5 * bend)),
            head_pitch_deg=12.0 * float(noise["head_pitch"][t]) + 20.0 * float(rear[t]),
            tail_curve_deg=100.0 * float(noise["tail"][t]) - 1.5 * bend,
            tail_wave_deg=25.0 * float(noise["wave"][t]),
            rearing=float(rear[t]), scale=scale, fur=fur))
        speed = p.speed_mm * max(0.2, 1.0 + 0.4 * float(noise["speed"][t])) * (1.0 - float(rear[t]))
        heading += turn
        x, y = x + speed * math.cos(heading), y + speed * math.sin(heading)
        r = math.hypot(x, y)
        if r > p.max_radius_mm:
            x, y = x * p.max_radius_mm / r, y * p.max_radius_mm / r
    return poses
