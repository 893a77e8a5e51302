"""The camera type and its geometry: `Cameras`, orbit/look-at, presets, pixel/Plücker rays,
`gslrm_input`, crop/resize of intrinsics, world-frame changes and the up axis the cameras agree on.
Calibration files, the half-pixel boundary and the lens model live in `calibration`; reports on a
camera set (`describe`, `domain_mismatches`, ray distances) in `camera_report`.

Conventions (see DESIGN.md): world Z-up, right-handed; cameras OpenCV (x right, y down,
z forward); `w2c [V,4,4]`, `K [V,3,3]`; pixel centres at +0.5. Camera tensors are float64 so
that millimetre rigs round-trip to 1e-6; cast with `.float()` before feeding a model.
Calibration files keep their own pixel convention (OpenCV: centres at integers, MATLAB: 1-based);
the importers/exporters in `calibration` convert at the boundary, so `Cameras.K` is always in ours.
"""
from __future__ import annotations

import copy
import json
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

    def scaled_to(self, width: int, height: int | None = None) -> "Cameras":
        """Cameras of the same images resized to width x height (height None: square; no crop). The one way
        the library rescales intrinsics with an image (`resize_intrinsics`: K's rows 0 and 1 times W'/W, H'/H)."""
        height = width if height is None else height
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


MOUSE_STANDARD_CAMERAS = "mouse_standard_6view"  # the camera set the demo data, models and tables assume


def mouse_standard_6view() -> Cameras:
    """Our 6-view mouse spec: distance 2.7, elevation 20°, azimuths 0,60,...,300, FaceLift intrinsics at 512²."""
    cams = orbit_cameras([0.0, 60.0, 120.0, 180.0, 240.0, 300.0], 20.0, fx=548.99)
    cams.names = [f"az{a:03d}" for a in range(0, 360, 60)]
    cams.meta = {"camera_type": "mouse_standard_6view", "camera_distance": FACELIFT_DISTANCE}
    return cams


def mouse_rig_6view() -> Cameras:
    """The virtual markerless_mouse_1 rig's 6 viewing directions as standard cameras: each rig camera's
    direction seen from the rig's aim point, at distance 2.7 with FaceLift's intrinsics, Z-up roll. This is
    what `preprocess` ("standard_camera") writes for a rig frame, up to the per-frame mouse centre and the
    rig's ±4 % spread of distances; it lets procedural mice be rendered at the rig's irregular azimuths and
    low elevations (-2°..15°, against the standard 20°) to measure a model on the cameras 05 trains on."""
    from .synthetic_rig import RIG_TARGET_MM, markerless_mouse_rig  # the rig module imports this one

    rig = markerless_mouse_rig()
    d = rig.centers.double() - torch.tensor(RIG_TARGET_MM, dtype=torch.float64)  # [V,3]
    az = torch.rad2deg(torch.atan2(d[:, 1], d[:, 0]))
    el = torch.rad2deg(torch.atan2(d[:, 2], d[:, :2].norm(dim=-1)))
    cams = orbit_cameras(az.tolist(), el.tolist(), fx=548.99)
    cams.names = list(rig.names)
    cams.meta = {"camera_type": "mouse_rig_6view", "camera_distance": FACELIFT_DISTANCE}
    return cams


# Specs a JSON can claim through "camera_type": what validate_sample checks against.
CAMERA_SPECS: dict[str, dict[str, float]] = {
    "facelift_standard": dict(distance=FACELIFT_DISTANCE, fx=FACELIFT_FOCAL, fy=FACELIFT_FOCAL, cx=256.0, cy=256.0,
                              width=512, height=512, n_views=6),
    "mouse_standard_6view": dict(distance=FACELIFT_DISTANCE, fx=548.99, fy=548.99, cx=256.0, cy=256.0,
                                 width=512, height=512, n_views=6),
    "mouse_rig_6view": dict(distance=FACELIFT_DISTANCE, fx=548.99, fy=548.99, cx=256.0, cy=256.0,
                            width=512, height=512, n_views=6),
}


# --- rays ---------------------------------------------------------------------------------
_STANDARD_BUILDERS = {"mouse_standard_6view": mouse_standard_6view, "facelift_standard": facelift_standard,
                      "mouse_rig_6view": mouse_rig_6view}


def standard_cameras(camera_type: str, size: int | None = None) -> Cameras:
    """The standard camera spec `camera_type` (a key of `CAMERA_SPECS`) at `size`² pixels.

    Intrinsics scale with the image (fx, cx * size / 512), so a 32² image sees exactly what the 512²
    spec sees; `meta` keeps camera_type and camera_distance for validate_sample.
    """
    if camera_type not in _STANDARD_BUILDERS:
        raise ValueError(f"unknown camera_type {camera_type!r}; known: {sorted(_STANDARD_BUILDERS)}")
    cams = _STANDARD_BUILDERS[camera_type]()
    if size is None or size == cams.width:
        return cams
    return cams.scaled_to(size)


def pixel_rays(cams: Cameras, height: int | None = None, width: int | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel world rays with FaceLift's pixel-centre convention.

    d_cam = K^-1 (x+0.5, y+0.5, 1) normalised (((x+0.5-cx-s y_n)/fx, y_n = (y+0.5-cy)/fy, 1); s = skew, 0 for
    the workbook's own cameras), d = R_c2w d_cam, o = camera centre.
    `height/width` resample the grid (intrinsics scaled accordingly) for a model working at
    another resolution. Returns (origins [V,H,W,3], dirs [V,H,W,3]) in `dtype`.
    """
    H, W = height or cams.height, width or cams.width
    if (W, H) != (cams.width, cams.height):
        cams = cams.scaled_to(W, H)
    fx, fy, cx, cy, skew = cams.fx, cams.fy, cams.cx, cams.cy, cams.skew
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
