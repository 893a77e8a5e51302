"""One camera model for everything: the `Cameras` type, orbit/look-at, presets, rays.

Conventions (see DESIGN.md): world Z-up, right-handed; cameras OpenCV (x right, y down,
z forward); `w2c [V,4,4]`, `K [V,3,3]`; pixel centres at +0.5. Camera tensors are float64 so
that millimetre rigs round-trip to 1e-6; cast with `.float()` before feeding a model.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

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
        """Pinhole projection (no distortion) of world points [N,3] -> (uv [V,N,2] px, depth [V,N])."""
        pts = torch.as_tensor(points, dtype=torch.float64)
        cam = pts @ self.w2c[:, :3, :3].transpose(1, 2) + self.w2c[:, None, :3, 3]  # [V,N,3]
        z = cam[..., 2]
        uv = cam[..., :2] / z[..., None]
        uv = uv * torch.stack([self.fx, self.fy], -1)[:, None] + torch.stack([self.cx, self.cy], -1)[:, None]
        return uv, z

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
def pixel_rays(cams: Cameras, height: int | None = None, width: int | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel world rays with FaceLift's pixel-centre convention.

    d_cam = ((x+0.5-cx)/fx, (y+0.5-cy)/fy, 1) normalised, d = R_c2w d_cam, o = camera centre.
    `height/width` resample the grid (intrinsics scaled accordingly) for a model working at
    another resolution. Returns (origins [V,H,W,3], dirs [V,H,W,3]) in `dtype`.
    """
    H, W = height or cams.height, width or cams.width
    sx, sy = W / cams.width, H / cams.height
    fx, fy = cams.fx * sx, cams.fy * sy
    cx, cy = cams.cx * sx, cams.cy * sy
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    d_cam = torch.stack([
        (xs[None] + 0.5 - cx[:, None, None]) / fx[:, None, None],
        (ys[None] + 0.5 - cy[:, None, None]) / fy[:, None, None],
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
