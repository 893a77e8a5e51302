"""One camera model for everything: the `Cameras` type, orbit/look-at, presets, rays, crop/resize,
world-frame changes, `describe`/`domain_mismatches` (a rig vs FaceLift's cameras), and rig
calibration importers (MAMMAL new_cam.pkl, DANNCE *dannce.mat, anipose calibration.toml).

Conventions (see DESIGN.md): world Z-up, right-handed; cameras OpenCV (x right, y down,
z forward); `w2c [V,4,4]`, `K [V,3,3]`; pixel centres at +0.5. Camera tensors are float64 so
that millimetre rigs round-trip to 1e-6; cast with `.float()` before feeding a model.
Calibration files keep their own pixel convention (OpenCV: centres at integers, MATLAB: 1-based);
the importers/exporters convert at the boundary, so `Cameras.K` is always in ours.
"""
from __future__ import annotations

import copy
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd
import scipy.io
import toml
import torch

FACELIFT_FOCAL = 548.9937744140625  # fx = fy at 512², FaceLift's standard cameras
FACELIFT_DISTANCE = 2.7
FACELIFT_SIZE = 512
# View order of FaceLift's multi-view diffusion output, and the file frames each one uses.
FACELIFT_VIEW_ORDER = ("front", "front_right", "right", "back", "left", "front_left")
FACELIFT_CAMERA_INDICES = (2, 1, 0, 5, 4, 3)
FACELIFT_FILE_AZIMUTHS = (180.0, 225.0, 270.0, 315.0, 0.0, 90.0)

_FRAME_KEYS = ("w", "h", "fx", "fy", "cx", "cy", "w2c")


@dataclass
class Cameras:
    """A set of V pinhole cameras sharing one image size.

    K: [V,3,3], w2c: [V,4,4] (OpenCV), dist: optional [V,5] OpenCV (k1,k2,p1,p2,k3).
    `meta` holds top-level JSON keys (id, camera_type, camera_distance, ...);
    `frame_extras` holds per-frame JSON keys we do not interpret (file_path, ...), so a
    FaceLift `opencv_cameras.json` round-trips without losing anything.
    """

    K: torch.Tensor
    w2c: torch.Tensor
    width: int
    height: int
    dist: torch.Tensor | None = None
    names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    frame_extras: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.K = torch.as_tensor(self.K, dtype=torch.float64)
        self.w2c = torch.as_tensor(self.w2c, dtype=torch.float64)
        if self.K.ndim != 3 or self.K.shape[1:] != (3, 3):
            raise ValueError(f"Cameras.K must be [V,3,3], got {tuple(self.K.shape)}")
        if self.w2c.shape != (self.K.shape[0], 4, 4):
            raise ValueError(f"Cameras.w2c must be [V,4,4] with V={self.K.shape[0]}, got {tuple(self.w2c.shape)}")
        if self.dist is not None:
            self.dist = torch.as_tensor(self.dist, dtype=torch.float64).reshape(len(self), 5)
        self.width, self.height = int(self.width), int(self.height)

    def __len__(self) -> int:
        return self.K.shape[0]

    # --- derived quantities -------------------------------------------------------------
    @property
    def c2w(self) -> torch.Tensor:
        """[V,4,4] camera-to-world."""
        return torch.linalg.inv(self.w2c)

    @property
    def centers(self) -> torch.Tensor:
        """[V,3] camera centres in world units: -R^T t."""
        R, t = self.w2c[:, :3, :3], self.w2c[:, :3, 3]
        return -(R.transpose(1, 2) @ t[..., None])[..., 0]

    @property
    def fx(self) -> torch.Tensor:
        return self.K[:, 0, 0]

    @property
    def fy(self) -> torch.Tensor:
        return self.K[:, 1, 1]

    @property
    def skew(self) -> torch.Tensor:
        """[V] K[0,1] (px): 0 for the workbook's own cameras; real calibrations (DANNCE) may have some."""
        return self.K[:, 0, 1]

    @property
    def cx(self) -> torch.Tensor:
        return self.K[:, 0, 2]

    @property
    def cy(self) -> torch.Tensor:
        return self.K[:, 1, 2]

    def __getitem__(self, idx: int | slice | Sequence[int] | torch.Tensor) -> "Cameras":
        """A subset or reordering of the cameras (always keeps the V dimension)."""
        if isinstance(idx, int):
            idx = [idx]
        ids = list(range(len(self)))[idx] if isinstance(idx, slice) else [int(i) for i in idx]
        pick = lambda xs: None if xs is None else [xs[i] for i in ids]  # noqa: E731
        return Cameras(
            K=self.K[ids].clone(), w2c=self.w2c[ids].clone(), width=self.width, height=self.height,
            dist=None if self.dist is None else self.dist[ids].clone(), names=pick(self.names),
            meta=copy.deepcopy(self.meta), frame_extras=copy.deepcopy(pick(self.frame_extras)),
        )

    def replace(self, **changes: Any) -> "Cameras":
        """A copy with some fields replaced (tensors are cloned, dicts deep-copied)."""
        fields = dict(K=self.K.clone(), w2c=self.w2c.clone(), width=self.width, height=self.height,
                      dist=None if self.dist is None else self.dist.clone(),
                      names=None if self.names is None else list(self.names),
                      meta=copy.deepcopy(self.meta), frame_extras=copy.deepcopy(self.frame_extras))
        fields.update(changes)
        return Cameras(**fields)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pinhole projection (no distortion; the whole K, skew included) of world points [N,3]
        -> (uv [V,N,2] px, depth [V,N])."""
        pts = torch.as_tensor(points, dtype=torch.float64)
        cam = pts @ self.w2c[:, :3, :3].transpose(1, 2) + self.w2c[:, None, :3, 3]  # [V,N,3]
        z = cam[..., 2]
        xy = cam[..., :2] / z[..., None]
        return xy @ self.K[:, :2, :2].transpose(1, 2) + self.K[:, None, :2, 2], z  # u = fx x + s y + cx

    def crop_resize(self, x0: float | Sequence[float] | torch.Tensor, y0: float | Sequence[float] | torch.Tensor,
                    w: int, h: int, out_w: int, out_h: int) -> "Cameras":
        """Cameras of the images cropped to [x0, x0+w) x [y0, y0+h) then resized to out_w x out_h.

        x0, y0: one offset for all views or one per view [V] (px, integer for a pixel-exact crop).
        Exact for non-uniform resizes (out_w/w != out_h/h); distortion coefficients are unchanged
        (they act on normalised coordinates).
        """
        K = crop_intrinsics(self.K, torch.as_tensor(x0, dtype=torch.float64), torch.as_tensor(y0, dtype=torch.float64))
        K = resize_intrinsics(K, out_w / w, out_h / h)
        return self.replace(K=K, width=out_w, height=out_h)

    def scaled_to(self, width: int, height: int) -> "Cameras":
        """Cameras of the same images resized to width x height (no crop)."""
        return self.crop_resize(0.0, 0.0, self.width, self.height, width, height)

    # --- FaceLift opencv_cameras.json ------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Cameras":
        frames = data.get("frames")
        if not frames:
            raise ValueError(f"{source}: no 'frames' list; expected FaceLift opencv_cameras.json "
                             "({'frames': [{w,h,fx,fy,cx,cy,w2c}, ...]})")
        for i, fr in enumerate(frames):
            missing = [k for k in _FRAME_KEYS if k not in fr]
            if missing:
                raise ValueError(f"{source}: frame {i} lacks {missing}")
        sizes = {(int(f["w"]), int(f["h"])) for f in frames}
        if len(sizes) != 1:
            raise ValueError(f"{source}: frames have different image sizes {sorted(sizes)}; "
                             "a FaceLift sample needs one size for all views")
        (w, h), = sizes
        K = torch.zeros(len(frames), 3, 3, dtype=torch.float64)
        K[:, 0, 0] = torch.tensor([float(f["fx"]) for f in frames], dtype=torch.float64)
        K[:, 1, 1] = torch.tensor([float(f["fy"]) for f in frames], dtype=torch.float64)
        K[:, 0, 2] = torch.tensor([float(f["cx"]) for f in frames], dtype=torch.float64)
        K[:, 1, 2] = torch.tensor([float(f["cy"]) for f in frames], dtype=torch.float64)
        K[:, 2, 2] = 1.0
        w2c = torch.tensor([f["w2c"] for f in frames], dtype=torch.float64)
        dist = None
        if all("dist" in f for f in frames):
            dist = torch.tensor([f["dist"] for f in frames], dtype=torch.float64)
        extras = [{k: v for k, v in f.items() if k not in _FRAME_KEYS + ("dist",)} for f in frames]
        meta = {k: v for k, v in data.items() if k != "frames"}
        return cls(K=K, w2c=w2c, width=w, height=h, dist=dist, meta=meta, frame_extras=extras)

    def to_dict(self) -> dict[str, Any]:
        frames = []
        for i in range(len(self)):
            fr: dict[str, Any] = {
                "w": self.width, "h": self.height,
                "fx": float(self.fx[i]), "fy": float(self.fy[i]),
                "cx": float(self.cx[i]), "cy": float(self.cy[i]),
                "w2c": self.w2c[i].tolist(),
            }
            if self.dist is not None:
                fr["dist"] = self.dist[i].tolist()
            if self.frame_extras is not None:
                fr.update(self.frame_extras[i])
            frames.append(fr)
        return {**self.meta, "frames": frames}

    @classmethod
    def from_opencv_json(cls, path: str | Path) -> "Cameras":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"camera file not found: {path} (a FaceLift sample needs opencv_cameras.json)")
        with open(path) as f:
            return cls.from_dict(json.load(f), source=str(path))

    def to_opencv_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        tmp.replace(path)  # atomic: a crash never leaves a half-written camera file
        return path


# --- construction ---------------------------------------------------------------------------
def intrinsics(fx: float | Sequence[float], fy: float | Sequence[float], cx: float | Sequence[float],
               cy: float | Sequence[float], n: int) -> torch.Tensor:
    """[n,3,3] pinhole intrinsics from scalars or per-camera sequences."""
    K = torch.zeros(n, 3, 3, dtype=torch.float64)
    K[:, 0, 0] = torch.as_tensor(fx, dtype=torch.float64)
    K[:, 1, 1] = torch.as_tensor(fy, dtype=torch.float64)
    K[:, 0, 2] = torch.as_tensor(cx, dtype=torch.float64)
    K[:, 1, 2] = torch.as_tensor(cy, dtype=torch.float64)
    K[:, 2, 2] = 1.0
    return K


def look_at_w2c(positions: torch.Tensor, target: Sequence[float] = (0.0, 0.0, 0.0),
                up: Sequence[float] = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenCV w2c [V,4,4] for cameras at positions [V,3] looking at target, FaceLift's construction.

    forward = normalize(target - pos); right = forward x up; up' = right x forward;
    c2w rotation columns = [right, -up', forward] (x right, y down, z forward).
    """
    pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1, 3)
    tgt = torch.as_tensor(target, dtype=torch.float64)
    upv = torch.as_tensor(up, dtype=torch.float64).expand_as(pos)
    fwd = torch.nn.functional.normalize(tgt - pos, dim=-1)
    right = torch.linalg.cross(fwd, upv)
    if (right.norm(dim=-1) < 1e-9).any():
        raise ValueError("look_at_w2c: a camera looks straight along the up vector; its roll is undefined")
    right = torch.nn.functional.normalize(right, dim=-1)
    up2 = torch.linalg.cross(right, fwd)
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(pos), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, -up2, fwd, pos
    return torch.linalg.inv(c2w)


def orbit_cameras(azimuths_deg: Sequence[float], elevation_deg: float | Sequence[float] = 0.0,
                  distance: float = FACELIFT_DISTANCE, fx: float = FACELIFT_FOCAL, fy: float | None = None,
                  cx: float | None = None, cy: float | None = None, width: int = FACELIFT_SIZE,
                  height: int | None = None, target: Sequence[float] = (0.0, 0.0, 0.0)) -> Cameras:
    """Cameras on a Z-up orbit looking at `target`; azimuth 0 is +X, 90 is +Y.

    position = target + distance * (cos el cos az, cos el sin az, sin el).
    """
    az = torch.deg2rad(torch.as_tensor(azimuths_deg, dtype=torch.float64).reshape(-1))
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float64)).expand_as(az)
    tgt = torch.as_tensor(target, dtype=torch.float64)
    pos = tgt + distance * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)
    height = width if height is None else height
    K = intrinsics(fx, fx if fy is None else fy, width / 2 if cx is None else cx,
                   height / 2 if cy is None else cy, len(az))
    return Cameras(K=K, w2c=look_at_w2c(pos, target=tgt), width=width, height=height)


def facelift_standard() -> Cameras:
    """FaceLift's 6 inference cameras in the diffusion view order (front, front_right, right, back, left, front_left)."""
    file_order = orbit_cameras(FACELIFT_FILE_AZIMUTHS, 0.0)
    cams = file_order[list(FACELIFT_CAMERA_INDICES)]
    cams.names = list(FACELIFT_VIEW_ORDER)
    cams.meta = {"camera_type": "facelift_standard", "camera_distance": FACELIFT_DISTANCE}
    return cams


def mouse_standard_6view() -> Cameras:
    """Our 6-view mouse spec: distance 2.7, elevation 20°, azimuths 0,60,...,300, FaceLift intrinsics at 512²."""
    cams = orbit_cameras([0.0, 60.0, 120.0, 180.0, 240.0, 300.0], 20.0, fx=548.99)
    cams.names = [f"az{a:03d}" for a in range(0, 360, 60)]
    cams.meta = {"camera_type": "mouse_standard_6view", "camera_distance": FACELIFT_DISTANCE}
    return cams


# Specs a JSON can claim through "camera_type": what validate_sample checks against.
CAMERA_SPECS: dict[str, dict[str, float]] = {
    "facelift_standard": dict(distance=FACELIFT_DISTANCE, fx=FACELIFT_FOCAL, fy=FACELIFT_FOCAL, cx=256.0, cy=256.0,
                              width=512, height=512, n_views=6),
    "mouse_standard_6view": dict(distance=FACELIFT_DISTANCE, fx=548.99, fy=548.99, cx=256.0, cy=256.0,
                                 width=512, height=512, n_views=6),
}


# --- rays ---------------------------------------------------------------------------------
_STANDARD_BUILDERS = {"mouse_standard_6view": mouse_standard_6view, "facelift_standard": facelift_standard}


def standard_cameras(camera_type: str, size: int | None = None) -> Cameras:
    """The standard camera spec `camera_type` (a key of `CAMERA_SPECS`) at `size`² pixels.

    Intrinsics scale with the image (fx, cx * size / 512), so a 32² image sees exactly what the 512²
    spec sees; `meta` keeps camera_type and camera_distance for validate_sample.
    """
    if camera_type not in _STANDARD_BUILDERS:
        raise ValueError(f"unknown camera_type {camera_type!r}; known: {sorted(_STANDARD_BUILDERS)}")
    cams = _STANDARD_BUILDERS[camera_type]()
    spec = CAMERA_SPECS[camera_type]
    if size is None or size == cams.width:
        return cams
    s = size / float(spec["width"])
    K = cams.K.clone()
    K[:, :2] *= s
    return cams.replace(K=K, width=size, height=size)


def pixel_rays(cams: Cameras, height: int | None = None, width: int | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel world rays with FaceLift's pixel-centre convention.

    d_cam = K^-1 (x+0.5, y+0.5, 1) normalised (((x+0.5-cx-s y_n)/fx, y_n = (y+0.5-cy)/fy, 1); s = skew, 0 for
    the workbook's own cameras), d = R_c2w d_cam, o = camera centre.
    `height/width` resample the grid (intrinsics scaled accordingly) for a model working at
    another resolution. Returns (origins [V,H,W,3], dirs [V,H,W,3]) in `dtype`.
    """
    H, W = height or cams.height, width or cams.width
    sx, sy = W / cams.width, H / cams.height
    fx, fy = cams.fx * sx, cams.fy * sy
    cx, cy = cams.cx * sx, cams.cy * sy
    skew = cams.skew * sx
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    y_n = (ys[None] + 0.5 - cy[:, None, None]) / fy[:, None, None]
    d_cam = torch.stack([
        (xs[None] + 0.5 - cx[:, None, None] - skew[:, None, None] * y_n) / fx[:, None, None],  # K^-1, skew too
        y_n,
        torch.ones(len(cams), H, W, dtype=torch.float64),
    ], -1)
    d_cam = torch.nn.functional.normalize(d_cam, dim=-1)
    c2w = cams.c2w
    dirs = torch.einsum("vij,vhwj->vhwi", c2w[:, :3, :3], d_cam)
    origins = c2w[:, None, None, :3, 3].expand_as(dirs)
    return origins.to(dtype), dirs.to(dtype)


def plucker_rays(cams: Cameras, kind: str = "facelift", height: int | None = None, width: int | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ray embedding [V,6,H,W].

    kind="facelift": [d, o + (-o·d) d] (direction and the ray point nearest the world origin),
    the 6 ray channels of FaceLift's GS-LRM input (prepend rgb*2-1 for its 9 channels).
    kind="moment": classic Plücker [o × d, d].
    """
    o, d = pixel_rays(cams, height, width, dtype=torch.float64)
    if kind == "facelift":
        t = -(o * d).sum(-1, keepdim=True)
        emb = torch.cat([d, o + t * d], -1)
    elif kind == "moment":
        emb = torch.cat([torch.linalg.cross(o, d), d], -1)
    else:
        raise ValueError(f"plucker_rays: kind must be 'facelift' or 'moment', got {kind!r}")
    return emb.permute(0, 3, 1, 2).to(dtype).contiguous()


def gslrm_input(images: torch.Tensor, cams: Cameras) -> torch.Tensor:
    """FaceLift GS-LRM 9-channel input [V,9,H,W] = [rgb*2-1, d, o + (-o·d) d] from images [V,3,H,W] in [0,1]."""
    V, _, H, W = images.shape
    rays = plucker_rays(cams, "facelift", height=H, width=W, dtype=images.dtype).to(images.device)
    return torch.cat([images[:, :3] * 2 - 1, rays], 1)


# --- intrinsics under crop and resize ---------------------------------------------------------
# Continuous pixel coordinates put pixel i's centre at i + 0.5, so the image spans [0, W]. A crop at
# offset x0 shifts them (u' = u - x0) and a resize by s scales them (u' = s u): both are exact
# affine maps of the image plane, i.e. a left-multiplication of K.
def crop_intrinsics(K: torch.Tensor, x0: float | torch.Tensor, y0: float | torch.Tensor) -> torch.Tensor:
    """K [...,3,3] of the image cropped at (x0, y0) px: cx' = cx - x0, cy' = cy - y0 (x0/y0 scalar or [...])."""
    K = torch.as_tensor(K, dtype=torch.float64)
    A = torch.zeros(K.shape, dtype=torch.float64) + torch.eye(3, dtype=torch.float64)
    A[..., 0, 2] = -torch.as_tensor(x0, dtype=torch.float64)
    A[..., 1, 2] = -torch.as_tensor(y0, dtype=torch.float64)
    return A @ K


def resize_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """K [...,3,3] of the image resized by sx (width) and sy (height): row 0 of K times sx, row 1 times sy."""
    K = torch.as_tensor(K, dtype=torch.float64)
    return torch.diag(torch.tensor([sx, sy, 1.0], dtype=torch.float64)) @ K


# --- world frames -----------------------------------------------------------------------------
def yup_to_zup() -> torch.Tensor:
    """[4,4] world transform from a Y-up frame (OpenGL/glTF: y up, z towards the viewer) to our Z-up.

    (x, y, z) -> (x, -z, y): a +90° rotation about X, so +Y goes to +Z and +Z to -Y.
    """
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    return T


def zup_to_yup() -> torch.Tensor:
    """[4,4] inverse of `yup_to_zup`: (x, y, z) -> (x, z, -y)."""
    return yup_to_zup().transpose(0, 1).contiguous()


def transform_world(cams: Cameras, T: torch.Tensor) -> Cameras:
    """The same cameras seen in a new world frame x' = T x, T [4,4] a similarity (s R_T, t_T).

    w2c' = S w2c T^-1 with S = diag(s, s, s, 1): the camera frame is scaled with the world, so the
    rotation stays orthonormal (R' = R R_T^T), only the translation takes the scale
    (t' = s t - R' t_T), and every world point projects to the same pixel as before.
    Reflections and non-uniform scales are refused: a pinhole camera cannot follow them.
    """
    T = torch.as_tensor(T, dtype=torch.float64)
    if T.shape != (4, 4) or not torch.allclose(T[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
        raise ValueError(f"transform_world: T must be a [4,4] affine matrix with last row [0,0,0,1], got {T.tolist()}")
    A, t_T = T[:3, :3], T[:3, 3]
    det = float(torch.linalg.det(A))
    if det <= 0:
        raise ValueError(f"transform_world: det(T[:3,:3]) = {det:.3g} <= 0 (a reflection or degenerate map); "
                         "a right-handed world must stay right-handed, flip an axis pair instead")
    s = det ** (1.0 / 3.0)
    R_T = A / s
    err = float((R_T @ R_T.T - torch.eye(3, dtype=torch.float64)).abs().max())
    if err > 1e-6:
        raise ValueError(f"transform_world: T[:3,:3] is not a uniform scale times a rotation (off by {err:.2g}); "
                         "shears and per-axis scales cannot be represented by pinhole cameras")
    R, t = cams.w2c[:, :3, :3], cams.w2c[:, :3, 3]
    R_new = R @ R_T.T
    w2c = torch.eye(4, dtype=torch.float64).repeat(len(cams), 1, 1)
    w2c[:, :3, :3] = R_new
    w2c[:, :3, 3] = s * t - R_new @ t_T
    return cams.replace(w2c=w2c)


def similarity_normalize(cams: Cameras, center: Sequence[float] | torch.Tensor,
                         target_mean_distance: float = FACELIFT_DISTANCE) -> tuple[Cameras, float, torch.Tensor]:
    """Move `center` [3] to the origin and scale uniformly so the mean camera distance is the target.

    Returns (cameras in the new frame, scale, translation [3]) with x' = scale * (x + translation),
    i.e. translation = -center: the convention of `Gaussians.transformed(scale, translation)`, so
    rig points and gaussians follow the cameras with the same two numbers.
    """
    c = torch.as_tensor(center, dtype=torch.float64).reshape(3)
    mean_dist = float((cams.centers - c).norm(dim=-1).mean())
    if not mean_dist > 0:
        raise ValueError(f"similarity_normalize: mean camera distance to {c.tolist()} is {mean_dist}; "
                         "the centre must differ from the camera positions")
    s = target_mean_distance / mean_dist
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] *= s
    T[:3, 3] = -s * c
    return transform_world(cams, T), s, -c


# --- describing a camera set ------------------------------------------------------------------
def camera_axes(cams: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World directions [V,3] of the camera's right (+x), down (+y) and optical axis (+z): rows of R."""
    R = cams.w2c[:, :3, :3]
    return R[:, 0], R[:, 1], R[:, 2]


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


_AXES = ("+X", "+Y", "+Z", "-X", "-Y", "-Z")


def detect_up_axis(cams: Cameras, target: Sequence[float] = (0.0, 0.0, 0.0)) -> str:
    """The signed world axis ('+Z', '+Y', ...) the cameras' up vectors (-y camera axis) agree on.

    Evidence 1: the mean up vector. When it is weak (|component| < 0.3: cameras rolled every which
    way, e.g. all looking straight down), evidence 2 decides: the mean direction from `target` to
    the cameras (rig cameras sit above the animal). Raises when neither is clear.
    """
    _, down, _ = camera_axes(cams)
    m = (-down).mean(0)
    if float(m.abs().max()) < 0.3:
        rel = torch.nn.functional.normalize(cams.centers - torch.as_tensor(target, dtype=torch.float64), dim=-1)
        m = rel.mean(0)
        if float(m.abs().max()) < 0.3:
            raise ValueError("detect_up_axis: neither the cameras' up vectors nor their positions around the target "
                             "agree on an up axis; pass the rig's up axis explicitly")
    i = int(m.abs().argmax())
    return _AXES[i + (3 if m[i] < 0 else 0)]


def is_z_up(cams: Cameras, target: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[bool, str]:
    """(whether the cameras say the world is Z-up, the detected up axis); see `detect_up_axis`.

    A '+Y' answer usually means a Y-up export: fix with transform_world(cams, yup_to_zup()).
    """
    axis = detect_up_axis(cams, target)
    return axis == "+Z", axis


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


def distort_normalized(xy: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """OpenCV's lens model on normalised coordinates xy [V,N,2] with dist [V,5] (k1,k2,p1,p2,k3)."""
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2, k3 = (dist[:, i, None] for i in range(5))
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], -1)


# --- where OpenCV's lens model can be inverted ----------------------------------------------------------------
# The radial part r_d = r (1 + k1 r² + k2 r⁴ + k3 r⁶) of a strong lens (k3 << 0, as real calibrations fit it)
# stops growing at some undistorted radius and folds back: beyond it an undistorted ray lands on a raw pixel that
# a ray inside the fold also lands on. Sampling there paints "ghosts" (bits of the mouse far from it), so every
# map through the model keeps only points inside the monotonic region and treats the rest as outside the frame.
def distortion_valid_radius(dist: np.ndarray | torch.Tensor) -> np.ndarray:
    """Undistorted (normalised) radius where OpenCV's radial model stops being monotonic, per camera.

    dist [5] or [V,5] (k1,k2,p1,p2,k3) -> [V] (or a 0-d array): the smallest positive root of
    d/dr [r (1 + k1 r² + k2 r⁴ + k3 r⁶)] = 1 + 3 k1 r² + 5 k2 r⁴ + 7 k3 r⁶; inf when there is none.
    Tangential terms move the fold a little: `distortion_valid` checks their full Jacobian per point as well.
    """
    d = np.asarray(dist, dtype=np.float64)
    out = []
    for k1, k2, _, _, k3 in d.reshape(-1, 5):
        roots = np.roots(np.trim_zeros([7 * k3, 5 * k2, 3 * k1, 1.0], "f"))  # in t = r², highest degree first
        t = [r.real for r in np.atleast_1d(roots) if abs(r.imag) < 1e-12 and r.real > 0]
        out.append(math.sqrt(min(t)) if t else math.inf)
    return np.asarray(out).reshape(d.shape[:-1])


def distort_normalized_np(xy: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's lens model on normalised points xy [...,2] of one camera (dist [5]) ->
    (distorted [...,2], Jacobian determinant [...] of the map at xy)."""
    k1, k2, p1, p2, k3 = (float(c) for c in np.asarray(dist, dtype=np.float64).reshape(5))
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    R = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dR = k1 + r2 * (2 * k2 + 3 * k3 * r2)                      # dR / d(r²)
    xd = x * R + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * R + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    cross = 2 * x * y * dR + 2 * p1 * x + 2 * p2 * y          # d xd/dy = d yd/dx
    det = (R + 2 * x * x * dR + 2 * p1 * y + 6 * p2 * x) * (R + 2 * y * y * dR + 6 * p1 * y + 2 * p2 * x) - cross ** 2
    return np.stack([xd, yd], -1), det


def distortion_valid(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """bool [...]: normalised undistorted points xy [...,2] of one camera (dist [5]) inside the region where the
    lens model is one-to-one: radius below `distortion_valid_radius` and a positive Jacobian (tangential terms)."""
    r_max = float(distortion_valid_radius(dist))
    _, det = distort_normalized_np(xy, dist)
    return ((xy ** 2).sum(-1) < r_max ** 2) & (det > 0)


def undistort_normalized(xd: np.ndarray, dist: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Invert OpenCV's lens model for one camera: distorted normalised points xd [...,2] -> undistorted [...,2],
    NaN where no point of the valid (monotonic) region distorts to xd (beyond the fold: no ray there).

    Radial bisection inside the valid radius gives the start, Newton steps with the full Jacobian add the
    tangential terms; results that do not reproduce xd to 1e-9 or leave the valid region are NaN.
    (cv2.undistortPoints iterates a fixed point that may converge beyond the fold or not at all.)
    """
    xd = np.asarray(xd, dtype=np.float64)
    dist = np.asarray(dist, dtype=np.float64).reshape(5)
    k1, k2, _, _, k3 = dist
    r_max = float(distortion_valid_radius(dist))
    radial = lambda r: r * (1 + k1 * r ** 2 + k2 * r ** 4 + k3 * r ** 6)  # noqa: E731
    rd = np.linalg.norm(xd, axis=-1)
    hi = np.full(rd.shape, r_max if math.isfinite(r_max) else 1.0)
    while not math.isfinite(r_max) and (radial(hi) < rd).any():
        hi = np.where(radial(hi) < rd, 2 * hi, hi)
    lo = np.zeros_like(rd)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = radial(mid) < rd
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    scale = np.divide(lo, rd, out=np.ones_like(rd), where=rd > 0)
    x = xd * scale[..., None]
    for _ in range(iterations):
        f, _ = distort_normalized_np(x, dist)
        eps = 1e-7
        fx, _ = distort_normalized_np(x + [eps, 0.0], dist)
        fy, _ = distort_normalized_np(x + [0.0, eps], dist)
        J = np.stack([(fx - f) / eps, (fy - f) / eps], -1)          # [...,2(out),2(in)]
        det = J[..., 0, 0] * J[..., 1, 1] - J[..., 0, 1] * J[..., 1, 0]
        r = f - xd
        safe = np.where(np.abs(det) > 1e-12, det, 1e-12)
        step = np.stack([J[..., 1, 1] * r[..., 0] - J[..., 0, 1] * r[..., 1],
                         -J[..., 1, 0] * r[..., 0] + J[..., 0, 0] * r[..., 1]], -1) / safe[..., None]
        x = x - step
    f, _ = distort_normalized_np(x, dist)
    ok = (np.linalg.norm(f - xd, axis=-1) < 1e-9 * np.maximum(1.0, rd)) & distortion_valid(x, dist)
    return np.where(ok[..., None], x, np.nan)


def distortion_displacement_px(cams: Cameras, n_per_side: int = 16) -> torch.Tensor:
    """[V] largest pixel shift the lens distortion causes on the image border (0 for pinholes)."""
    if cams.dist is None:
        return torch.zeros(len(cams), dtype=torch.float64)
    t = torch.linspace(0, 1, n_per_side, dtype=torch.float64)
    W, H = float(cams.width), float(cams.height)
    border = torch.cat([torch.stack([t * W, torch.zeros_like(t)], -1), torch.stack([t * W, torch.full_like(t, H)], -1),
                        torch.stack([torch.zeros_like(t), t * H], -1), torch.stack([torch.full_like(t, W), t * H], -1)])
    f = torch.stack([cams.fx, cams.fy], -1)[:, None]
    c = torch.stack([cams.cx, cams.cy], -1)[:, None]
    xy = (border[None] - c) / f
    shift = ((distort_normalized(xy, cams.dist) - xy) * f).norm(dim=-1)
    valid = torch.stack([torch.from_numpy(distortion_valid(xy[v].numpy(), cams.dist[v].numpy()))
                         for v in range(len(cams))])  # beyond the fold the model is no lens: not a shift
    return torch.where(valid, shift, torch.zeros_like(shift)).amax(-1)


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


# --- rig calibration files ----------------------------------------------------------------------
# Pixel-coordinate conventions. Calibration files keep their tool's convention: OpenCV (MAMMAL,
# anipose) puts pixel i's centre at i, MATLAB (DANNCE/Label3D) at i + 1. The importers return OpenCV
# 0-based pixels by default (DANNCE: cx - 1, cy - 1), i.e. what cv2.projectPoints and 2D labels use.
# The workbook's rays and renderer (like FaceLift, gsplat and Blender) put pixel i's centre at i + 0.5:
# pass pixel_centers="workbook" (or call `opencv_to_workbook_pixels`) where a calibration enters the
# pipeline, so the principal point moves by half a pixel and rays go through the right pixels.
OPENCV_TO_WORKBOOK_PX = 0.5   # u_workbook = u_opencv + 0.5
PIXEL_CENTERS = ("opencv", "workbook")


def _shift_pixels(K: np.ndarray | torch.Tensor, offset: float) -> torch.Tensor:
    """K whose pixel coordinates are u + offset, v + offset (K [...,3,3])."""
    return crop_intrinsics(torch.as_tensor(np.asarray(K), dtype=torch.float64), -offset, -offset)


def _pixel_offset(pixel_centers: str) -> float:
    """Offset added to OpenCV 0-based pixel coordinates to reach `pixel_centers`."""
    if pixel_centers not in PIXEL_CENTERS:
        raise ValueError(f"pixel_centers must be one of {PIXEL_CENTERS}, got {pixel_centers!r}")
    return OPENCV_TO_WORKBOOK_PX if pixel_centers == "workbook" else 0.0


def opencv_to_workbook_pixels(cams: Cameras) -> Cameras:
    """Cameras with OpenCV 0-based intrinsics -> the workbook's pixel-centre-at-+0.5 convention (cx, cy + 0.5)."""
    return cams.replace(K=_shift_pixels(cams.K, OPENCV_TO_WORKBOOK_PX))


def workbook_to_opencv_pixels(cams: Cameras) -> Cameras:
    """Inverse of `opencv_to_workbook_pixels` (cx, cy - 0.5)."""
    return cams.replace(K=_shift_pixels(cams.K, -OPENCV_TO_WORKBOOK_PX))


def _check_calibration(K: torch.Tensor, R: torch.Tensor, source: str, names: list[str]) -> None:
    # Skew (K[0,1]) is kept as the file has it: preprocessing absorbs it exactly in its warp (written
    # FaceLift cameras are skew-free); rendering a skewed camera is refused by render.render.
    for v, name in enumerate(names):
        if float(K[v, 1, 0]) != 0 or K[v, 2].tolist() != [0.0, 0.0, 1.0]:
            raise ValueError(f"{source}: camera {name!r} intrinsics are not [[fx,s,cx],[0,fy,cy],[0,0,1]]: "
                             f"{K[v].tolist()}")
        err = float((R[v] @ R[v].T - torch.eye(3, dtype=torch.float64)).abs().max())
        det = float(torch.linalg.det(R[v]))
        if err > 1e-6 or det < 0:
            raise ValueError(f"{source}: camera {name!r} rotation is not a rotation (|RR^T-I| = {err:.2g}, "
                             f"det = {det:.3g}); check whether the file stores R transposed or a c2w")


def _cameras_from_opencv(K_cv: Sequence[np.ndarray], R: Sequence[np.ndarray], T: Sequence[np.ndarray],
                         dist: Sequence[np.ndarray] | None, width: int, height: int, names: list[str],
                         source: str, meta: dict[str, Any], pixel_centers: str = "opencv") -> Cameras:
    """Cameras from per-camera OpenCV K (0-based pixels), R, T (x_cam = R X + T) and dist (5)."""
    K_raw = np.stack([np.asarray(k, dtype=np.float64).reshape(3, 3) for k in K_cv])
    for name, k, r, t in zip(names, K_raw, R, T):  # before the pixel shift, which would turn inf into NaN
        bad = [key for key, x in (("K", k), ("R", r), ("T", t)) if not np.isfinite(np.asarray(x, dtype=np.float64)).all()]
        if bad:
            raise ValueError(f"{source}: camera {name!r} has NaN/inf in {bad}; fix the calibration file")
    K = _shift_pixels(K_raw, _pixel_offset(pixel_centers))
    meta = {**meta, "pixel_centers": pixel_centers}
    Rt = torch.as_tensor(np.stack([np.asarray(r, dtype=np.float64).reshape(3, 3) for r in R]))
    _check_calibration(K, Rt, source, names)
    w2c = torch.eye(4, dtype=torch.float64).repeat(len(names), 1, 1)
    w2c[:, :3, :3] = Rt
    w2c[:, :3, 3] = torch.as_tensor(np.stack([np.asarray(t, dtype=np.float64).reshape(3) for t in T]))
    d = None if dist is None else torch.as_tensor(np.stack([_dist5(x, source, n) for x, n in zip(dist, names)]))
    return Cameras(K=K, w2c=w2c, width=width, height=height, dist=d, names=names, meta=meta)


def _dist5(d: Any, source: str, name: str) -> np.ndarray:
    """OpenCV (k1,k2,p1,p2[,k3]) as 5 numbers; 4 means k3 = 0 in OpenCV's own model."""
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    if d.size == 4:
        d = np.append(d, 0.0)
    if d.size != 5:
        raise ValueError(f"{source}: camera {name!r} has {d.size} distortion coefficients; the workbook supports "
                         "OpenCV's 5-term model (k1,k2,p1,p2,k3), not the rational/thin-prism/fisheye ones")
    return d


def _to_opencv(cams: Cameras, pixel_centers: str = "opencv") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-camera OpenCV K (0-based pixels), R, T, dist [V,5] (zeros for a pinhole set) from cams in `pixel_centers`."""
    K = _shift_pixels(cams.K, -_pixel_offset(pixel_centers)).numpy()
    dist = np.zeros((len(cams), 5)) if cams.dist is None else cams.dist.numpy()
    return K, cams.w2c[:, :3, :3].numpy(), cams.w2c[:, :3, 3].numpy(), dist


def _names(cams: Cameras) -> list[str]:
    return list(cams.names) if cams.names is not None else [f"cam{i}" for i in range(len(cams))]


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


# What a calibration pickle may reference: numpy arrays, dtypes and scalars (numpy 1 and 2 module names).
# dicts, lists, tuples, numbers and strings need no reference at all.
_PICKLE_ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                   for n in ("_reconstruct", "scalar")} \
    | {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")} \
    | {("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict")}


class _CalibrationUnpickler(pickle.Unpickler):
    """Refuses every global but numpy arrays/dtypes/scalars: unpickling a crafted file runs no code."""

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def read_calibration_pickle(path: str | Path) -> Any:
    """A calibration pickle (MAMMAL new_cam.pkl) holding only dicts, lists, tuples, numbers, strings and numpy
    arrays; anything else (which could run code) or a truncated/corrupt file is a ValueError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _CalibrationUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused "):
            raise ValueError(f"{path}: refused to load: the pickle references {str(e)[8:]}, which a calibration "
                             "never holds (only dicts, lists, numbers, strings and numpy arrays); loading it could "
                             "run code. Re-export the calibration (cameras.save_mammal_pkl) from a trusted source"
                             ) from None
        raise ValueError(f"{path}: not a readable pickle ({e}); the file is truncated or corrupt: copy the "
                         "calibration again") from e
    except (EOFError, ValueError, TypeError, IndexError, AttributeError, KeyError) as e:
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); the file is truncated or "
                         "corrupt: copy the calibration again") from e


def load_mammal_pkl(path: str | Path, width: int = 1152, height: int = 1024,
                    pixel_centers: str = "opencv") -> Cameras:
    """MAMMAL `new_cam.pkl`: {i: {"K" 3x3, "R" 3x3, "T" (3,), optional "dist" (5,), "name"}} for i = 0..N-1
    (a list works too). OpenCV convention x_cam = R X + T, 0-based pixels; units kept (mm).
    The file has no image size: width/height default to MAMMAL's 1152x1024. Read with a restricted unpickler
    (`read_calibration_pickle`): a crafted file cannot run code."""
    path = _require_file(path, "MAMMAL camera file (new_cam.pkl)")
    data = read_calibration_pickle(path)
    if isinstance(data, dict):
        keys = sorted(data)
        if keys != list(range(len(keys))):
            raise ValueError(f"{path}: expected camera keys 0..N-1, got {keys}")
        entries = [data[k] for k in keys]
    elif isinstance(data, (list, tuple)):
        entries = list(data)
    else:
        raise ValueError(f"{path}: expected a dict {{i: {{'K','R','T'}}}} or a list, got {type(data).__name__}")
    names = []
    for i, e in enumerate(entries):
        missing = [k for k in ("K", "R", "T") if k not in e]
        if missing:
            raise ValueError(f"{path}: camera {i} lacks {missing} (MAMMAL cameras need K, R, T)")
        names.append(str(e.get("name", i)))
    has_dist = ["dist" in e for e in entries]
    if any(has_dist) and not all(has_dist):
        raise ValueError(f"{path}: cameras {[n for n, h in zip(names, has_dist) if not h]} lack 'dist' while others "
                         "have it; give every camera its coefficients (zeros for an undistorted one)")
    return _cameras_from_opencv([e["K"] for e in entries], [e["R"] for e in entries], [e["T"] for e in entries],
                                [e["dist"] for e in entries] if all(has_dist) else None, width, height, names,
                                str(path), {"calibration_format": "mammal_pkl"}, pixel_centers)


def save_mammal_pkl(cams: Cameras, path: str | Path, pixel_centers: str = "opencv") -> Path:
    """Write `cams` (in `pixel_centers` convention) as a MAMMAL-style new_cam.pkl (OpenCV pixels in the file)."""
    K, R, T, dist = _to_opencv(cams, pixel_centers)
    data = {}
    for i, name in enumerate(_names(cams)):
        data[i] = {"K": K[i].copy(), "R": R[i].copy(), "T": T[i].copy(), "name": name}
        if cams.dist is not None:
            data[i]["dist"] = dist[i].copy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def load_dannce_mat(path: str | Path, width: int, height: int, pixel_centers: str = "opencv") -> Cameras:
    """DANNCE / Label3D `*dannce.mat`: `params` (cell of structs K, r, t, RDistort, TDistort) + `camnames`.

    MATLAB conventions: K is stored transposed ([fx 0 0; s fy 0; cx cy 1]) with 1-based pixels;
    r (3x3), t (1x3) act on row vectors ([X 1]·[r; t]), so R = r^T, T = t^T; RDistort = [k1 k2 (k3)],
    TDistort = [p1 p2]. Units kept (mm). The file has no image size: pass width/height.
    """
    path = _require_file(path, "DANNCE calibration (*dannce.mat)")
    try:
        m = scipy.io.loadmat(str(path), simplify_cells=True)
    except NotImplementedError as e:  # scipy raises this for v7.3 (HDF5) files
        raise ValueError(f"{path}: MATLAB v7.3 file, which scipy cannot read; re-save it in MATLAB with "
                         "`s = load(f); save(g, '-struct', 's', '-v7')`") from e
    except Exception as e:  # noqa: BLE001 - scipy's errors for a non-MAT file: IndexError, MatReadError, ValueError...
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e}); a DANNCE calibration is "
                         "the *dannce.mat (or *_params.mat) saved by Label3D/DANNCE: check the path, or copy the "
                         "file again if it is truncated") from e
    if "params" not in m:
        raise ValueError(f"{path}: no 'params' variable (found {sorted(k for k in m if not k.startswith('__'))}); "
                         "a DANNCE calibration has params (cell of camera structs) and camnames")
    params = m["params"]
    params = [params] if isinstance(params, dict) else list(params)
    camnames = m.get("camnames", [f"Camera{i + 1}" for i in range(len(params))])
    names = [camnames] if isinstance(camnames, str) else [str(n) for n in camnames]
    if len(names) != len(params):
        raise ValueError(f"{path}: {len(params)} cameras in params but {len(names)} camnames")
    K_cv, R, T, dist = [], [], [], []
    for name, p in zip(names, params):
        missing = [k for k in ("K", "r", "t", "RDistort", "TDistort") if k not in p]
        if missing:
            raise ValueError(f"{path}: camera {name!r} lacks {missing}")
        K_cv.append(_shift_pixels(np.asarray(p["K"], dtype=np.float64).T, -1.0).numpy())  # 1-based -> 0-based
        R.append(np.asarray(p["r"], dtype=np.float64).T)
        T.append(np.asarray(p["t"], dtype=np.float64).reshape(3))
        k = np.asarray(p["RDistort"], dtype=np.float64).reshape(-1)
        if k.size not in (2, 3):
            raise ValueError(f"{path}: camera {name!r} RDistort has {k.size} values, expected [k1 k2] or [k1 k2 k3]")
        k3 = k[2] if k.size == 3 else 0.0  # MATLAB's 2-coefficient model is k3 = 0
        p1, p2 = np.asarray(p["TDistort"], dtype=np.float64).reshape(2)
        dist.append(np.array([k[0], k[1], p1, p2, k3]))
    return _cameras_from_opencv(K_cv, R, T, dist, width, height, names, str(path), {"calibration_format": "dannce_mat"},
                                pixel_centers)


def save_dannce_mat(cams: Cameras, path: str | Path, pixel_centers: str = "opencv") -> Path:
    """Write `cams` as a DANNCE-style .mat (params + camnames, 1-based pixels; inverse of `load_dannce_mat`)."""
    K, R, T, dist = _to_opencv(cams, pixel_centers)
    params = np.empty((len(cams), 1), dtype=object)
    for i in range(len(cams)):
        params[i, 0] = {
            "K": _shift_pixels(K[i], 1.0).numpy().T,  # 0-based -> 1-based, then MATLAB's transposed layout
            "r": R[i].T, "t": T[i][None, :],
            "RDistort": dist[i, [0, 1, 4]][None, :], "TDistort": dist[i, [2, 3]][None, :],
        }
    camnames = np.empty((1, len(cams)), dtype=object)
    camnames[0, :] = _names(cams)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"params": params, "camnames": camnames})
    return path


def load_anipose_toml(path: str | Path, pixel_centers: str = "opencv") -> Cameras:
    """anipose `calibration.toml`: [cam_N] name, size [w,h], matrix, distortions (5), rotation (Rodrigues,
    world->camera), translation; [metadata] kept in meta["anipose_metadata"]. OpenCV 0-based pixels;
    units are the board's (usually mm). Cameras are ordered by N (aniposelib sorts the section names as
    strings, which differs from 11 cameras on: match views by `names`)."""
    path = _require_file(path, "anipose calibration (calibration.toml)")
    try:
        data = toml.load(path)
    except toml.TomlDecodeError as e:
        raise ValueError(f"{path}: cannot parse as TOML ({e}); the `toml` package needs arrays of one type, "
                         "e.g. write 0.0 rather than 0 in a float matrix") from e
    sections = {k: v for k, v in data.items() if k != "metadata"}
    if not sections:
        raise ValueError(f"{path}: no camera sections; anipose calibrations have [cam_0], [cam_1], ...")

    def order(key: str) -> tuple[int, str]:
        suffix = key.rsplit("_", 1)[-1]
        return (int(suffix), key) if suffix.isdigit() else (1 << 30, key)

    keys = sorted(sections, key=order)
    names, K, R, T, dist, sizes = [], [], [], [], [], set()
    for key in keys:
        c = sections[key]
        missing = [k for k in ("size", "matrix", "distortions", "rotation", "translation") if k not in c]
        if missing:
            raise ValueError(f"{path}: [{key}] lacks {missing}")
        name = str(c.get("name", key))
        if c.get("fisheye", False):
            raise ValueError(f"{path}: [{key}] ({name}) is a fisheye camera; only OpenCV's pinhole+distortion "
                             "model is supported")
        names.append(name)
        sizes.add(tuple(int(s) for s in c["size"]))
        K.append(np.asarray(c["matrix"], dtype=np.float64))
        R.append(cv2.Rodrigues(np.asarray(c["rotation"], dtype=np.float64).reshape(3, 1))[0])
        T.append(np.asarray(c["translation"], dtype=np.float64))
        dist.append(c["distortions"])
    if len(sizes) != 1:
        raise ValueError(f"{path}: cameras have different image sizes {sorted(sizes)}; Cameras needs one size "
                         "(load subsets with the same size separately)")
    (w, h), = sizes
    meta = {"calibration_format": "anipose_toml", "anipose_metadata": data.get("metadata", {})}
    return _cameras_from_opencv(K, R, T, dist, w, h, names, str(path), meta, pixel_centers)


def save_anipose_toml(cams: Cameras, path: str | Path, pixel_centers: str = "opencv") -> Path:
    """Write `cams` as an anipose calibration.toml (OpenCV pixels; inverse of `load_anipose_toml`)."""
    K, R, T, dist = _to_opencv(cams, pixel_centers)
    data: dict[str, Any] = {}
    for i, name in enumerate(_names(cams)):
        data[f"cam_{i}"] = {
            "name": name, "size": [cams.width, cams.height], "matrix": K[i].tolist(),
            "distortions": dist[i].tolist(), "rotation": cv2.Rodrigues(R[i])[0].reshape(3).tolist(),
            "translation": T[i].tolist(),
        }
    data["metadata"] = cams.meta.get("anipose_metadata", {"adjusted": False})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        toml.dump(data, f)
    return path


def project_points_opencv(cams: Cameras, points: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Project world points [N,3] with each camera's lens distortion through cv2.projectPoints -> [V,N,2].

    Pixel coordinates in the convention of `cams.K` (OpenCV 0-based for imported calibrations, pixel
    centres at +0.5 for workbook cameras); skew (K[0,1]) applies after the distortion, as in MATLAB/DANNCE. Points behind a camera are projected too (cv2 does not
    check): mask them with `Cameras.project`'s depth.
    """
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 3))
    K = cams.K.numpy()
    dist = np.zeros((len(cams), 5)) if cams.dist is None else cams.dist.numpy()
    out = []
    for v in range(len(cams)):
        rvec = cv2.Rodrigues(cams.w2c[v, :3, :3].numpy())[0]
        # cv2.projectPoints ignores K[0,1]: distort in normalised coordinates, then apply the whole K (skew too)
        xd, _ = cv2.projectPoints(pts, rvec, cams.w2c[v, :3, 3].numpy().copy(), np.eye(3), dist[v])
        out.append(xd.reshape(-1, 2) @ K[v, :2, :2].T + K[v, :2, 2])
    return torch.as_tensor(np.stack(out))
