"""Calibration files and the lens model: where a rig's cameras enter the workbook.

- The half-pixel boundary: calibration tools put pixel i's centre at i (OpenCV) or i + 1 (MATLAB); the
  workbook's rays and renderer at i + 0.5 (`opencv_to_workbook_pixels`, `pixel_centers=`).
- Importers/exporters: MAMMAL new_cam.pkl (restricted unpickler), DANNCE *dannce.mat, anipose
  calibration.toml; `project_points_opencv` (cv2's projection, the whole K).
- OpenCV's 5-term lens model: distort, where it can be inverted (`distortion_valid_radius`,
  `distortion_valid`), its inverse (`undistort_normalized`), its size on the image border.

`pickle`, `scipy.io` and `toml` are imported here only, not in `cameras` (which every module imports).
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import scipy.io
import toml
import torch

from .cameras import Cameras


# --- OpenCV's lens model ------------------------------------------------------------------------------
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


# --- rig calibration files ----------------------------------------------------------------------
# Pixel-coordinate conventions. Calibration files keep their tool's convention: OpenCV (MAMMAL,
# anipose) puts pixel i's centre at i, MATLAB (DANNCE/Label3D) at i + 1. The importers return OpenCV
# 0-based pixels by default (DANNCE: cx - 1, cy - 1), i.e. what cv2.projectPoints and 2D labels use.
# The workbook's rays and renderer (like FaceLift, gsplat and Blender) put pixel i's centre at i + 0.5:
# pass pixel_centers="workbook" (or call `opencv_to_workbook_pixels`) where a calibration enters the
# pipeline, so the principal point moves by half a pixel and rays go through the right pixels.
OPENCV_TO_WORKBOOK_PX = 0.5   # u_workbook = u_opencv + 0.5
PIXEL_CENTERS = ("opencv", "workbook")


def pixel_offset_matrix(offset: float) -> np.ndarray:
    """[3,3] homogeneous pixel map u' = u + offset, v' = v + offset: the one half-pixel shift between pixel-centre
    conventions (offset -OPENCV_TO_WORKBOOK_PX takes workbook pixels to OpenCV's; left-multiply a K, conjugate a
    pixel map)."""
    return np.array([[1.0, 0.0, offset], [0.0, 1.0, offset], [0.0, 0.0, 1.0]])


def _shift_pixels(K: np.ndarray | torch.Tensor, offset: float) -> torch.Tensor:
    """K whose pixel coordinates are u + offset, v + offset (K [...,3,3])."""
    return torch.as_tensor(pixel_offset_matrix(offset) @ np.asarray(K, dtype=np.float64))


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
                             "run code. Re-export the calibration (calibration.save_mammal_pkl) from a trusted source"
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
