"""Rig frame -> FaceLift sample: four ways to frame the mouse, each with cameras exact for its pixels.

One frame (all its views at once: the mouse centre and the scale are shared) goes through:

1. read images and masks (OpenCV); with lens distortion or skew in the calibration, masks are undistorted
   into the skew-free pinhole camera (on a canvas large enough for the whole mask) before any statistic is
   taken, so every number below is in skew-free pinhole pixels;
2. per view: mask area, centre of mass (CoM), bounding box, whether the raw mask touches the border;
3. the mouse centre: least-squares intersection of the rays through the mask centroids;
4. per view an image transform ``T = K_img R_rel K^-1`` (3x3, raw pinhole px -> written px) and a
   written camera ``K_img [R_rel R | R_rel t]``, so ``K_img [R_rel R | R_rel t] X == T K [R | t] X`` for
   every 3D point X: crops are ``R_rel = I, K_img = A K`` (A = crop+resize), ``standard_camera`` is the
   rotation homography about the camera centre. Only ``distance_mode="per_view_zoom"`` writes cameras
   that differ from the pixels (an approximation, recorded in the JSON);
5. world normalisation: ``x_facelift = scale * (x_rig - centre)`` (Z-up kept), one scale per sample with
   the mean camera distance 2.7;
6. one resampling per view (``cv2.warpAffine`` / ``warpPerspective``, or ``remap`` through `lens_maps` when
   there is distortion), RGBA PNG (alpha = warped mask) + opencv_cameras.json. A calibration's skew is
   absorbed there exactly (T starts from the whole raw K); written cameras have none. Output rays beyond the
   radius where the lens polynomial folds back are outside the frame (`calibration.distortion_valid`), so a strong
   lens cannot paint ghost copies of the mouse.

Pixel convention: continuous pixel coordinates with pixel centres at +0.5 (DESIGN.md) everywhere in this
module; OpenCV's warps put centres at integers, so matrices are conjugated by a half-pixel shift
(`to_opencv_pixels`) right before they reach OpenCV.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facelift_lib.calibration import distort_normalized_np, distortion_valid, distortion_valid_radius, undistort_normalized
from facelift_lib.cameras import FACELIFT_DISTANCE, FACELIFT_FOCAL, FACELIFT_SIZE, Cameras, look_at_w2c, similarity_normalize
from facelift_lib.io import save_sample
from facelift_lib.rig import Rig, RigError, RigFrame, load_rig, read_rig_frame

METHODS = ("bbox_uniform", "bbox_centered", "pixel_based", "standard_camera")
DISTANCE_MODES = ("fixed", "per_view_zoom")
# Named variants (a method plus options) that notebooks and profiles select by one string.
VARIANTS: dict[str, dict[str, str]] = {
    **{m: {"method": m} for m in METHODS},
    "standard_camera_zoom": {"method": "standard_camera", "distance_mode": "per_view_zoom"},
}
ROLL_MODES = ("z_up", "minimal")
# A raw mask under this fraction of its image's pixels (0.05 %: 590 px at 1152x1024, 9 px at 144x128) is
# processed but flagged `raw_near_empty`: a speck of segmentation, not a mouse; grading counts such views.
RAW_NEAR_EMPTY_FRACTION = 0.0005


class PreprocessError(RigError):
    """Bad rig input for preprocessing; the message names the file, the view and the fix."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides how a rig frame becomes a FaceLift sample.

    method: one of METHODS. size: written image side (px).
    distance_mode: standard_camera only; "fixed" keeps every camera where it stands (exact),
      "per_view_zoom" also zooms each view as if its camera stood at `target_distance` and writes it
      there (an approximation: off-centre depths no longer match; recorded as approximate).
    bbox_fill: bbox methods, bounding-box side / image side (bbox_uniform: the largest box of the frame).
    pixel_fill: pixel_based, mean sqrt(mask area) over the views / image side.
    margin_px: pixel_based, the smallest gap (written px) kept between any mask pixel and the border.
    roll: standard_camera, virtual camera roll: "z_up" (world Z up in the image, FaceLift's look-at) or
      "minimal" (smallest rotation from the real camera; needed for cameras looking straight down).
    antialias: pre-shrink by an integer factor with area averaging when a view is scaled below 1/2
      (an exact affine map, composed into the transform), so bilinear warps do not alias.
    min_mask_px: a raw mask with fewer pixels is an error (empty view); masks of at least this many pixels
      but under RAW_NEAR_EMPTY_FRACTION of the image are processed and flagged (`raw_near_empty_views`).
    workers: threads for `preprocess_rig` (frames in parallel; 1 = one at a time).
    on_error: "raise" stops at the first bad frame; "skip" writes the others and lists the bad ones
      (with their errors) in out_dir/preprocess_errors.json.
    """

    method: str = "standard_camera"
    size: int = FACELIFT_SIZE
    distance_mode: str = "fixed"
    target_distance: float = FACELIFT_DISTANCE
    focal_512: float = FACELIFT_FOCAL
    bbox_fill: float = 0.8
    pixel_fill: float = 0.3
    margin_px: float = 2.0
    roll: str = "z_up"
    antialias: bool = True
    min_mask_px: int = 1
    workers: int = 2
    on_error: str = "raise"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"PreprocessConfig: method must be one of {METHODS}, got {self.method!r}")
        if self.distance_mode not in DISTANCE_MODES:
            raise ValueError(f"PreprocessConfig: distance_mode must be one of {DISTANCE_MODES}, "
                             f"got {self.distance_mode!r}")
        if self.distance_mode != "fixed" and self.method != "standard_camera":
            raise ValueError(f"PreprocessConfig: distance_mode={self.distance_mode!r} only applies to "
                             f"method='standard_camera', not {self.method!r}")
        if self.roll not in ROLL_MODES:
            raise ValueError(f"PreprocessConfig: roll must be one of {ROLL_MODES}, got {self.roll!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"PreprocessConfig: on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.size < 8:
            raise ValueError(f"PreprocessConfig: size must be >= 8 px, got {self.size}")
        for name in ("bbox_fill", "pixel_fill"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"PreprocessConfig: {name} must be in (0, 1], got {getattr(self, name)}")


def variant_config(name: str, **overrides: Any) -> PreprocessConfig:
    """PreprocessConfig of a named variant (VARIANTS: the four methods and "standard_camera_zoom"),
    with `overrides` (size, workers, ...) on top."""
    if name not in VARIANTS:
        raise ValueError(f"unknown preprocessing variant {name!r}; choose from {sorted(VARIANTS)}")
    return PreprocessConfig(**{**VARIANTS[name], **overrides})


# --- pixel geometry (pure numpy, float64) ----------------------------------------------------------------
_TO_CV = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])  # centres at +0.5 -> at integers


def to_opencv_pixels(T: np.ndarray) -> np.ndarray:
    """A pixel map [...,3,3] in our convention (centres at +0.5) -> the same map in OpenCV's (centres at 0)."""
    return _TO_CV @ T @ np.linalg.inv(_TO_CV)


def opencv_intrinsics(K: np.ndarray) -> np.ndarray:
    """Intrinsics [...,3,3] in our convention -> OpenCV's (cx, cy shifted by -0.5)."""
    return _TO_CV @ K


def crop_resize_matrix(center: np.ndarray, scale: np.ndarray | float, size: int) -> np.ndarray:
    """[V,3,3] affine pixel maps that put `center` [V,2] at the image centre and scale by `scale` ([V] or scalar).

    x_out = scale * (x - center) + size / 2 : a square crop of side size/scale around `center`, resized
    to `size`. The written intrinsics are A @ K (exact).
    """
    center = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(center),))
    A = np.tile(np.eye(3), (len(center), 1, 1))
    A[:, 0, 0] = A[:, 1, 1] = scale
    A[:, :2, 2] = size / 2 - scale[:, None] * center
    return A


def rotation_homography(K_old: np.ndarray, R_rel: np.ndarray, K_new: np.ndarray) -> np.ndarray:
    """H = K_new R_rel K_old^-1 [V,3,3]: the exact image map of a camera rotated by R_rel about its centre."""
    return K_new @ R_rel @ np.linalg.inv(K_old)


def apply_homography(T: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Points uv [V,N,2] through pixel maps T [V,3,3] -> [V,N,2]."""
    h = np.concatenate([uv, np.ones_like(uv[..., :1])], -1) @ np.swapaxes(T, -1, -2)
    return h[..., :2] / h[..., 2:3]


def local_scale(T: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """sqrt|det J| of pixel maps T [V,3,3] at points uv [V,2]: how much each view is magnified there."""
    eps = 1e-3
    base = apply_homography(T, uv[:, None])[:, 0]
    dx = (apply_homography(T, (uv + [eps, 0.0])[:, None])[:, 0] - base) / eps
    dy = (apply_homography(T, (uv + [0.0, eps])[:, None])[:, 0] - base) / eps
    return np.sqrt(np.abs(dx[:, 0] * dy[:, 1] - dx[:, 1] * dy[:, 0]))


def triangulate_rays(origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Least-squares point nearest to V rays (origins, dirs [V,3]): solves sum (I - d d^T)(p - o) = 0."""
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    P = np.eye(3) - d[:, :, None] * d[:, None, :]
    A, b = P.sum(0), (P @ origins[:, :, None]).sum(0)[:, 0]
    if np.linalg.cond(A) > 1e12:
        raise PreprocessError("triangulate_rays: the rays are (nearly) parallel; the mouse centre is undefined "
                              "(need at least two cameras that see the mouse from different directions)")
    return np.linalg.solve(A, b)


def pixel_ray_dirs(K: np.ndarray, w2c: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """World directions [V,3] of the rays through pinhole pixels uv [V,2] (continuous px)."""
    d_cam = np.linalg.solve(K, np.concatenate([uv, np.ones_like(uv[:, :1])], -1)[..., None])[..., 0]
    return np.einsum("vji,vj->vi", w2c[:, :3, :3], d_cam)  # R^T d


def look_at_rotation(centers: np.ndarray, target: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """World->camera rotations [V,3,3] of cameras at `centers` [V,3] looking at `target`, world Z up in the image."""
    fwd = target - centers
    fwd = fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)
    steep = np.degrees(np.arcsin(np.abs(fwd[:, 2])))
    if (steep > 89.0).any():
        bad = [names[i] for i in np.flatnonzero(steep > 89.0)]
        raise PreprocessError(f"standard_camera: view(s) {bad} look (nearly) straight up or down at the mouse, so "
                              "a Z-up roll is undefined; use PreprocessConfig(roll='minimal')")
    return look_at_w2c(torch.from_numpy(centers), target=target.tolist())[:, :3, :3].numpy()


def minimal_rotation(w2c: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World->camera rotations [V,3,3] that turn each camera's optical axis onto `target` by the smallest angle."""
    R = w2c[:, :3, :3]
    b = np.einsum("vij,j->vi", R, target) + w2c[:, :3, 3]       # target in camera coords
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    z = np.array([0.0, 0.0, 1.0])
    out = []
    for bv, Rv in zip(b, R):
        axis = np.cross(bv, z)                                 # rotate b onto +z
        s, c = np.linalg.norm(axis), float(bv @ z)
        if s < 1e-12:
            out.append(Rv.copy())
            continue
        k = axis / s
        Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        R_rel = np.eye(3) + s * Kx + (1 - c) * Kx @ Kx
        out.append(R_rel @ Rv)
    return np.stack(out)


# --- masks ------------------------------------------------------------------------------------------------
@dataclass
class MaskStats:
    """Per-view statistics of binary masks, in continuous pixel coordinates (pixel centres at +0.5).

    area [V] pixels; com [V,2] centre of mass; bbox [V,4] (x0, y0, x1, y1) pixel edges;
    touches_border [V] any mask pixel in the first/last row/column.
    """

    area: np.ndarray
    com: np.ndarray
    bbox: np.ndarray
    touches_border: np.ndarray


def mask_stats(masks: Sequence[np.ndarray]) -> MaskStats:
    """Statistics of uint8 masks [H,W] (mouse > 127): OpenCV threshold, bounding box, then moments of the box only."""
    area, com, bbox, border = [], [], [], []
    for m in masks:
        _, b = cv2.threshold(m, 127, 1, cv2.THRESH_BINARY)
        x, y, w, h = cv2.boundingRect(b)
        mo = cv2.moments(b[y:y + h, x:x + w], binaryImage=True)
        a = mo["m00"]
        area.append(a)
        com.append((x + mo["m10"] / a + 0.5, y + mo["m01"] / a + 0.5) if a > 0 else (math.nan, math.nan))
        bbox.append((x, y, x + w, y + h))
        border.append(a > 0 and (x == 0 or y == 0 or x + w == m.shape[1] or y + h == m.shape[0]))
    return MaskStats(np.asarray(area, dtype=np.float64), np.asarray(com, dtype=np.float64),
                     np.asarray(bbox, dtype=np.float64), np.asarray(border, dtype=bool))


# --- the plan: where each view goes -------------------------------------------------------------------------
@dataclass
class FramePlan:
    """What `plan_frame` decides for one frame; everything needed to warp and to write the JSON.

    R_rel [V,3,3] rotation raw camera -> virtual camera (identity for crops); K_img [V,3,3] intrinsics of
    the written pixels; T [V,3,3] raw pinhole px -> written px (= K_img R_rel K^-1);
    cams: the written cameras (FaceLift units); center_mm [3], scale: x_facelift = scale (x_rig - center_mm);
    exact: written cameras agree with the pixels; flags: what the JSON records.
    """

    R_rel: np.ndarray
    K_img: np.ndarray
    T: np.ndarray
    cams: Cameras
    center_mm: np.ndarray
    scale: float
    exact: bool
    flags: dict[str, Any]


def mouse_center(cams: Cameras, com: np.ndarray) -> np.ndarray:
    """Triangulated mouse centre [3] (rig units): least squares over the rays through the mask centroids [V,2],
    given in the pixels of the skew-free pinhole cameras skew_free(cams.K) (`camera_mask_stats`; for cameras
    without skew or distortion, the raw masks' own)."""
    K, w2c = skew_free(cams.K.numpy()), cams.w2c.numpy()
    return triangulate_rays(cams.centers.numpy(), pixel_ray_dirs(K, w2c, com))


def bbox_intrinsics(K: np.ndarray, stats: MaskStats, cfg: PreprocessConfig) -> np.ndarray:
    """bbox_uniform / bbox_centered: square crops centred on the bounding boxes -> written K [V,3,3] = A K."""
    box_c = (stats.bbox[:, :2] + stats.bbox[:, 2:]) / 2
    side = np.maximum(stats.bbox[:, 2] - stats.bbox[:, 0], stats.bbox[:, 3] - stats.bbox[:, 1])
    s = cfg.bbox_fill * cfg.size / (side.max() if cfg.method == "bbox_uniform" else side)
    return crop_resize_matrix(box_c, s, cfg.size) @ K


def pixel_based_intrinsics(K: np.ndarray, stats: MaskStats, cfg: PreprocessConfig, names: Sequence[str]
                           ) -> tuple[np.ndarray, dict[str, Any]]:
    """pixel_based: CoM at the centre, one scale from the mean sqrt(area), shrunk so no mask pixel is clipped.
    -> (written K [V,3,3] = A K, flags: pixel_scale_shrunk when the target scale would have clipped)."""
    S = cfg.size
    s_target = cfg.pixel_fill * S / float(np.sqrt(stats.area).mean())
    # Largest half-extent of each mask around its CoM (to pixel edges): scale * extent must fit in S/2 - margin.
    ext = np.maximum(stats.com - stats.bbox[:, :2], stats.bbox[:, 2:] - stats.com).max(-1)
    s_fit = (S / 2 - cfg.margin_px) / ext
    s = min(s_target, float(s_fit.min()))
    flags = {}
    if s < s_target:
        flags["pixel_scale_shrunk"] = {"target": s_target, "used": s, "factor": s / s_target,
                                       "limiting_view": names[int(np.argmin(s_fit))]}
    return crop_resize_matrix(stats.com, s, S) @ K, flags


def standard_camera_rotation(w2c: np.ndarray, centers: np.ndarray, center: np.ndarray, cfg: PreprocessConfig,
                             names: Sequence[str]) -> np.ndarray:
    """R_rel [V,3,3] turning each real camera (w2c [V,4,4], centres [V,3]) about its centre to look at the
    mouse centre [3], with the roll of cfg.roll."""
    R_new = look_at_rotation(centers, center, names) if cfg.roll == "z_up" else minimal_rotation(w2c, center)
    return R_new @ np.swapaxes(w2c[:, :3, :3], 1, 2)


def plan_frame(cams: Cameras, stats: MaskStats, cfg: PreprocessConfig) -> FramePlan:
    """Per-view image transforms and written cameras for one frame (see the module docstring).

    cams: the raw rig cameras (pinhole part; distortion is handled by the warp); stats: their masks in the
    pixels of the skew-free pinhole camera `skew_free(K)` (`pinhole_mask_stats`; the raw masks themselves when
    the calibration has neither distortion nor skew). Everything is planned in those pixels; the stored
    transform T = K_img R_rel K^-1 starts from the whole raw K, so a calibration's skew is absorbed by the warp
    and the written cameras (K_img: A K0 for crops, FaceLift's for standard_camera) have none.
    """
    V, S = len(cams), cfg.size
    names = cams.names or [f"view {i}" for i in range(V)]
    K_raw, w2c = cams.K.numpy(), cams.w2c.numpy()
    K = skew_free(K_raw)
    centers = cams.centers.numpy()
    center = triangulate_rays(centers, pixel_ray_dirs(K, w2c, stats.com))
    dists = np.linalg.norm(centers - center, axis=-1)
    flags: dict[str, Any] = {}
    R_rel = np.tile(np.eye(3), (V, 1, 1))
    pos = centers                 # written camera centres (rig units): where the real ones stand ...
    f = cfg.focal_512 * S / FACELIFT_SIZE
    K_std = np.tile(np.array([[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]]), (V, 1, 1))

    if cfg.method in ("bbox_uniform", "bbox_centered"):
        K_img = bbox_intrinsics(K, stats, cfg)
    elif cfg.method == "pixel_based":
        K_img, flags = pixel_based_intrinsics(K, stats, cfg, names)
    else:  # standard_camera
        R_rel = standard_camera_rotation(w2c, centers, center, cfg, names)
        K_img = K_std
        if cfg.distance_mode == "per_view_zoom":
            zoom = dists / dists.mean()  # = distance in FaceLift units / 2.7; > 1: farther than 2.7, zoom in
            K_img = crop_resize_matrix(np.full((V, 2), S / 2), zoom, S) @ K_std
            pos = center + (centers - center) / zoom[:, None]  # ... except here: moved along the ray to 2.7
            flags["approximate_cameras"] = ("per_view_zoom: each view zoomed by distance/2.7 about the image "
                                            "centre and its camera written at 2.7 on the same ray; exact only at "
                                            "the mouse centre")
            flags["per_view_zoom"] = zoom.tolist()

    exact = pos is centers
    R_new = R_rel @ w2c[:, :3, :3]
    w2c_new = np.tile(np.eye(4), (V, 1, 1))
    w2c_new[:, :3, :3] = R_new
    w2c_new[:, :3, 3] = -np.einsum("vij,vj->vi", R_new, pos)
    virtual = Cameras(K=torch.from_numpy((K_img if exact else K_std).copy()), w2c=torch.from_numpy(w2c_new),
                      width=S, height=S, names=list(names))
    out, scale, _ = similarity_normalize(virtual, torch.from_numpy(center), cfg.target_distance)
    return FramePlan(R_rel=R_rel, K_img=K_img, T=rotation_homography(K_raw, R_rel, K_img), cams=out, center_mm=center,
                     scale=scale, exact=exact, flags=flags)


def camera_mask_stats(masks: Sequence[np.ndarray], cams: Cameras, raw_stats: MaskStats | None = None) -> MaskStats:
    """Statistics of raw uint8 masks [V] of `cams` in the pixels preprocessing plans in: those of the skew-free
    pinhole cameras (`pinhole_mask_stats`: undistorted, whole masks) when the calibration has distortion or
    skew, else the raw masks' own (`raw_stats` when already measured)."""
    K = cams.K.numpy()
    dist = None if cams.dist is None or not bool(torch.any(cams.dist != 0)) else cams.dist.numpy()
    if dist is None and not np.any(K[:, 0, 1] != 0):
        return raw_stats if raw_stats is not None else mask_stats(masks)
    return pinhole_mask_stats(masks, K, dist)


# --- warping ----------------------------------------------------------------------------------------------
def skew_free(K: np.ndarray) -> np.ndarray:
    """K [...,3,3] with its skew K[0,1] set to 0: the pinhole camera every plan and every written camera uses."""
    K0 = np.array(K, dtype=np.float64, copy=True)
    K0[..., 0, 1] = 0.0
    return K0


_OUTSIDE = -1.0e6  # a map value far outside any image: cv2.remap's constant border (0) fills that pixel


def lens_maps(K_src: np.ndarray, dist: np.ndarray | None, R_rel: np.ndarray, K_out: np.ndarray, width: int,
              height: int, origin: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (float32 [height,width] x, y in OpenCV's pixel convention) of an output camera K_out rotated
    by R_rel about the raw camera (K_src with skew, dist [5] or None): output pixel centre
    (origin + (j + 0.5, i + 0.5)) -> ray R_rel^T K_out^-1 p -> OpenCV's lens model -> raw pixel K_src [x_d, 1].

    cv2.initUndistortRectifyMap does the lens model with the skew-free K0 = skew_free(K_src) (it ignores skew,
    as cv2.projectPoints does); the skew is then added exactly: K_src = S K0 with S the shear
    u += s (v - cy) / fy. Rays outside the lens model's one-to-one region (`calibration.distortion_valid`: beyond
    the radius where the radial polynomial folds back) or behind the camera map outside the image, so they
    are background with no mask, never a "ghost" copy of raw pixels from inside the fold.
    """
    K_src = np.asarray(K_src, dtype=np.float64)
    K0 = skew_free(K_src)
    K_shift = np.array([[1.0, 0.0, -origin[0]], [0.0, 1.0, -origin[1]], [0.0, 0.0, 1.0]]) @ K_out
    d = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64)
    mx, my = cv2.initUndistortRectifyMap(opencv_intrinsics(K0), d, R_rel, opencv_intrinsics(K_shift),
                                         (width, height), cv2.CV_32FC1)
    if K_src[0, 1] != 0:
        cy_cv = K_src[1, 2] - 0.5
        mx = mx + np.float32(K_src[0, 1] / K_src[1, 1]) * (my - np.float32(cy_cv))
    # the guard: rays of the output pixels (a homography of the grid). The output square maps to a convex
    # quadrilateral of rays, so when its corners lie in front and well inside the fold, every pixel does.
    H64 = R_rel.T @ np.linalg.inv(K_shift)
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], dtype=np.float64) @ H64.T
    r_max = float(distortion_valid_radius(d))
    if (corners[:, 2] > 0).all() and (np.linalg.norm(corners[:, :2] / corners[:, 2:], axis=-1) < 0.7 * r_max).all():
        return mx, my
    H = H64.astype(np.float32)
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    z = H[2, 0] * xs + H[2, 1] * ys + H[2, 2]
    ok = z > 1e-12
    if math.isfinite(r_max):
        zs = np.where(ok, z, 1.0)
        xn = (H[0, 0] * xs + H[0, 1] * ys + H[0, 2]) / zs
        yn = (H[1, 0] * xs + H[1, 1] * ys + H[1, 2]) / zs
        r2 = xn * xn + yn * yn
        ok &= r2 < r_max ** 2
        near = ok & (r2 > (0.7 * r_max) ** 2)  # the Jacobian (tangential terms) matters only near the fold
        if near.any():
            pts = np.stack([xn[near], yn[near]], -1).astype(np.float64)
            ok[near] = distortion_valid(pts, d)
    mx[~ok] = _OUTSIDE
    my[~ok] = _OUTSIDE
    return mx, my


def undistorted_extent(K: np.ndarray, dist: np.ndarray | None, width: int, height: int, n_per_side: int = 256
                       ) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of the skew-free pinhole camera skew_free(K) that holds the whole raw image
    [width x height] of camera (K, dist) once undistorted (+2 px), so no undistorted mask pixel falls off it.

    The undistorted frame is bounded by the undistorted raw border and, for a lens that folds, by the valid
    radius (`calibration.distortion_valid_radius`): both are sampled, the parts that lie in the frame kept.
    """
    dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64)
    t = (np.arange(n_per_side) + 0.5) / n_per_side
    W, H = float(width), float(height)
    border = np.concatenate([np.stack([t * W, 0 * t], -1), np.stack([t * W, 0 * t + H], -1),
                             np.stack([0 * t, t * H], -1), np.stack([0 * t + W, t * H], -1),
                             [[0, 0], [W, 0], [0, H], [W, H]]])
    xd = np.concatenate([border, np.ones_like(border[:, :1])], -1) @ np.linalg.inv(K).T
    pts = [undistort_normalized(xd[:, :2], dist)]
    r_max = float(distortion_valid_radius(dist))
    if math.isfinite(r_max):
        a = np.linspace(0, 2 * np.pi, 4 * n_per_side, endpoint=False)
        circle = 0.999 * r_max * np.stack([np.cos(a), np.sin(a)], -1)
        cd, _ = distort_normalized_np(circle, dist)
        uv = cd @ K[:2, :2].T + K[:2, 2]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W) & (uv[:, 1] >= 0) & (uv[:, 1] <= H)
        pts.append(circle[inside & distortion_valid(circle, dist)])
    xn = np.concatenate(pts)
    xn = xn[np.isfinite(xn).all(-1)]
    uv = xn @ skew_free(K)[:2, :2].T + K[:2, 2]
    x0, y0 = (int(math.floor(uv[:, i].min())) - 2 for i in (0, 1))
    x1, y1 = (int(math.ceil(uv[:, i].max())) + 2 for i in (0, 1))
    return x0, y0, x1, y1


@lru_cache(maxsize=64)
def _pinhole_maps(K: tuple, dist: tuple, w: int, h: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """(origin, map1, map2) of `undistort_mask` for one camera (cached: a rig's cameras do not change)."""
    K_np, d = np.asarray(K).reshape(3, 3), np.asarray(dist)
    x0, y0, x1, y1 = undistorted_extent(K_np, d, w, h)
    mx, my = lens_maps(K_np, d, np.eye(3), skew_free(K_np), x1 - x0, y1 - y0, origin=(x0, y0))
    m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
    return (x0, y0), m1, m2


def undistort_mask(mask: np.ndarray, K: np.ndarray, dist: np.ndarray | None) -> tuple[np.ndarray, tuple[int, int]]:
    """A uint8 mask [H,W] of camera (K, dist; skew allowed) -> (mask of the skew-free pinhole camera
    skew_free(K), nearest, on a canvas that holds the whole undistorted frame; its origin (x0, y0) in that
    camera's pixels). The canvas is not clipped to [W,H]: a mask touching the raw border keeps every pixel."""
    h, w = mask.shape[:2]
    d = tuple(np.zeros(5) if dist is None else np.asarray(dist, np.float64).tolist())
    origin, m1, m2 = _pinhole_maps(tuple(np.asarray(K, np.float64).ravel().tolist()), d, w, h)
    return cv2.remap(mask, m1, m2, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0), origin


def pinhole_mask_stats(masks: Sequence[np.ndarray], K: np.ndarray, dist: np.ndarray | None) -> MaskStats:
    """`mask_stats` of raw masks [V] of cameras K [V,3,3] (+ dist [V,5]) measured in the pixels of their
    skew-free pinhole cameras (`undistort_mask`; whole masks, however far the undistortion moves them);
    touches_border is left False: whether the raw mask touches the raw border is the raw masks' statistic."""
    canvases = [undistort_mask(m, K[v], None if dist is None else dist[v]) for v, m in enumerate(masks)]
    st = mask_stats([c for c, _ in canvases])
    shift = np.array([o for _, o in canvases], dtype=np.float64)
    return MaskStats(area=st.area, com=st.com + shift, bbox=st.bbox + np.concatenate([shift, shift], -1),
                     touches_border=np.zeros(len(masks), dtype=bool))


def _shrink(img: np.ndarray, k: int) -> np.ndarray:
    """Exact integer down-scale by k (area average over k x k blocks; the ragged edge is cropped first),
    i.e. continuous pixel coordinates map as x -> x / k."""
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    return cv2.resize(img[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)


def source_window(T: np.ndarray, size: int, width: int, height: int, pad: int, align: int = 1
                  ) -> tuple[int, int, int, int]:
    """The raw-pixel box (x0, y0, x1, y1) that the written square [0,size]² reads through T [3,3] (raw px ->
    written px), grown by `pad` px, x0/y0 rounded down to multiples of `align`, clipped to the image.

    A homography maps the square's edges to straight lines, so its corners bound the footprint; when a
    corner maps behind the raw camera the footprint is unbounded and the whole image is returned.
    """
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    h = corners @ np.linalg.inv(T).T
    if not (h[:, 2] > 0).all():
        return 0, 0, width, height
    uv = h[:, :2] / h[:, 2:]
    x0, y0 = (max(0, int(math.floor(uv[:, i].min())) - pad) // align * align for i in (0, 1))
    x1 = min(width, int(math.ceil(uv[:, 0].max())) + pad)
    y1 = min(height, int(math.ceil(uv[:, 1].max())) + pad)
    return x0, y0, max(x0, x1), max(y0, y1)


def warp_view(image: np.ndarray, mask: np.ndarray, K: np.ndarray, dist: np.ndarray | None, R_rel: np.ndarray,
              K_img: np.ndarray, size: int, shrink: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """One view -> RGBA uint8 [size,size,4] (RGB order): the image through K_img R_rel K^-1 (bilinear),
    alpha = the warped mask. K may have skew (absorbed exactly: K^-1 is the whole inverse); K_img has none.
    With distortion the map goes through `lens_maps` (skew included, nothing sampled beyond the lens fold).

    image [H,W,3] uint8 in OpenCV's BGR order, mask [H,W] uint8 (0/255), both of the raw (possibly distorted)
    camera K [3,3] (+ dist [5]); R_rel, K_img from `plan_frame`. `shrink` > 1 first area-averages by that
    factor (exact, composed into the map). Outside the raw image: RGB 0, alpha 0. `out`: where to write.
    Only the window of the raw image that the output reads is touched (`source_window`: a crop is an integer
    translation, composed into K exactly), and image + mask go through one 4-channel warp: OpenCV's
    vectorised path, ~3x faster than warping 3 + 1 channels.
    """
    distorted = dist is not None and bool(np.any(dist != 0))
    if not distorted:
        h, w = mask.shape[:2]
        x0, y0, x1, y1 = source_window(rotation_homography(K, R_rel, K_img), size, w, h, pad=2 * shrink,
                                       align=shrink)
        if x1 - x0 < shrink or y1 - y0 < shrink:  # the output sees none of the raw image
            out = np.empty((size, size, 4), np.uint8) if out is None else out
            out[...] = 0
            return out
        image, mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        K = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ K
    if shrink > 1:
        image, mask = _shrink(image, shrink), _shrink(mask, shrink)
        K = np.diag([1.0 / shrink, 1.0 / shrink, 1.0]) @ K
    src = cv2.merge([image, mask])
    flags, border = cv2.INTER_LINEAR, dict(borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if distorted:  # our own maps: skew of K included, rays beyond the lens model's fold are outside (no ghosts)
        mx, my = lens_maps(K, np.asarray(dist, np.float64), R_rel, K_img, size, size)
        warped = cv2.remap(src, mx, my, flags, **border)
    else:
        T_cv = to_opencv_pixels(rotation_homography(K, R_rel, K_img))
        if np.allclose(R_rel, np.eye(3), atol=0, rtol=0):
            warped = cv2.warpAffine(src, T_cv[:2], (size, size), flags=flags, **border)
        else:
            warped = cv2.warpPerspective(src, T_cv, (size, size), flags=flags, **border)
    return cv2.cvtColor(warped, cv2.COLOR_BGRA2RGBA, dst=out)


def shrink_factors(plan: FramePlan, stats: MaskStats, antialias: bool) -> list[int]:
    """Integer pre-shrink per view: floor(1 / magnification at the mask CoM) when that is >= 2, else 1."""
    if not antialias:
        return [1] * len(stats.area)
    mag = local_scale(plan.T, stats.com)
    return [int(1.0 / m) if m < 0.5 else 1 for m in mag]


# --- checking a rig's calibration --------------------------------------------------------------------
def check_calibration(cams: Cameras, source: str | Path) -> None:
    """Non-finite or non-positive intrinsics, non-finite poses or distortion -> PreprocessError naming the camera."""
    names = cams.names or [str(i) for i in range(len(cams))]
    for v, name in enumerate(names):
        parts = {"K": cams.K[v], "w2c": cams.w2c[v]}
        if cams.dist is not None:
            parts["dist"] = cams.dist[v]
        bad = [k for k, x in parts.items() if not torch.isfinite(x).all()]
        if bad:
            raise PreprocessError(f"{source}: camera {name!r} (view {v}) has NaN/inf in {bad}; fix the calibration")
        if not (cams.K[v, 0, 0] > 0 and cams.K[v, 1, 1] > 0):
            raise PreprocessError(f"{source}: camera {name!r} (view {v}) has focal lengths "
                                  f"fx={float(cams.K[v, 0, 0]):g}, fy={float(cams.K[v, 1, 1]):g}; they must be > 0")


# --- one frame -> one sample --------------------------------------------------------------------------------
def check_masks(rf: RigFrame, stats: MaskStats, min_mask_px: int) -> None:
    """A view whose mask has fewer than `min_mask_px` mouse pixels -> PreprocessError naming file and view."""
    names = rf.cams.names or [str(i) for i in range(len(rf.masks))]
    for v, a in enumerate(stats.area):
        if a < min_mask_px:
            top = int(rf.masks[v].max())
            hint = (f" Its values stop at {top}: masks must be 0/255 (mouse > 127), rescale 0/1 masks."
                    if 0 < top <= 127 else "")
            raise PreprocessError(f"{rf.mask_files[v]}: mask of view {v} ({names[v]}) has {int(a)} mouse pixel(s) "
                                  f"(< {min_mask_px}), the view is empty; fix the segmentation or leave the frame "
                                  f"out with frames=[...].{hint}")


def preprocess_frame(rf: RigFrame, cfg: PreprocessConfig) -> tuple[np.ndarray, Cameras]:
    """A rig frame -> (RGBA uint8 [V,S,S,4] in RGB order, written Cameras with the JSON meta/extras)."""
    cams, S = rf.cams, cfg.size
    dist = None if cams.dist is None else cams.dist.numpy()
    K = cams.K.numpy()
    raw_stats = mask_stats(rf.masks)
    check_masks(rf, raw_stats, cfg.min_mask_px)
    stats = camera_mask_stats(rf.masks, cams, raw_stats)
    raw_border = raw_stats.touches_border
    raw_near_empty = raw_stats.area < RAW_NEAR_EMPTY_FRACTION * cams.width * cams.height
    plan = plan_frame(cams, stats, cfg)
    shrink = shrink_factors(plan, stats, cfg.antialias)
    rgba = np.empty((len(cams), S, S, 4), np.uint8)
    for v in range(len(cams)):
        warp_view(rf.images[v], rf.masks[v], K[v], None if dist is None else dist[v], plan.R_rel[v], plan.K_img[v],
                  S, shrink[v], out=rgba[v])
    edge = lambda x: (x[..., 3] > 127).any(-1)  # noqa: E731  (any mouse pixel along a border line)
    clipped = edge(rgba[:, 0]) | edge(rgba[:, -1]) | edge(rgba[:, :, 0]) | edge(rgba[:, :, -1])
    names = cams.names or [str(i) for i in range(len(cams))]
    flags = dict(plan.flags)
    flags["raw_border_views"] = [int(v) for v in np.flatnonzero(raw_border)]
    flags["raw_near_empty_views"] = [int(v) for v in np.flatnonzero(raw_near_empty)]
    flags["clipped_views"] = [int(v) for v in np.flatnonzero(clipped)]
    extras = []
    for v in range(len(cams)):
        # raw_image relative to the rig folder (images/<camera>/<frame>.png), so samples do not carry machine paths
        ex = {"raw_camera": names[v], "raw_image": Path(*rf.image_files[v].parts[-3:]).as_posix(),
              "raw_K": K[v].tolist(), "raw_w2c": cams.w2c[v].tolist(),
              "raw_to_image": plan.T[v].tolist(), "shrink": shrink[v],
              "raw_mask_px": int(raw_stats.area[v]), "raw_mask_touches_border": bool(raw_border[v]),
              "raw_mask_near_empty": bool(raw_near_empty[v]), "clipped": bool(clipped[v])}
        if dist is not None:
            ex["raw_dist"] = dist[v].tolist()
        extras.append(ex)
    meta: dict[str, Any] = {
        "preprocess_method": cfg.method,
        "preprocess": {**dataclasses.asdict(cfg), "rig_frame": rf.frame},
        "normalization": {"scale": plan.scale, "translation": (-plan.center_mm).tolist(),
                          "center_rig": plan.center_mm.tolist(), "rule": "x_facelift = scale * (x_rig + translation)",
                          "mean_camera_distance": cfg.target_distance},
        "cameras_exact": plan.exact,
        "flags": flags,
    }
    if cfg.distance_mode == "per_view_zoom":
        meta["camera_distance"] = cfg.target_distance  # every written camera stands at the target distance
    out = plan.cams.replace(meta=meta, frame_extras=extras)
    return rgba, out


def write_sample(sample_dir: str | Path, rgba: np.ndarray, cams: Cameras) -> Path:
    """RGBA uint8 [V,S,S,4] + cameras -> a FaceLift sample folder (through io.save_sample).

    RGB is zeroed where alpha is 0, as in FaceLift's own samples: nothing reads it (views are composited
    over a background by alpha), and arena noise there made PNG encoding 3x slower and files 100x larger.
    """
    for view in rgba:  # OpenCV's masked AND: ~5x faster than numpy boolean indexing over [S,S,4]
        view[...] = cv2.bitwise_and(view, view, mask=view[..., 3])
    return save_sample(sample_dir, torch.from_numpy(rgba).permute(0, 3, 1, 2), cams)


# --- a whole rig ----------------------------------------------------------------------------------------------
def checked_rig(rig: Rig | str | Path) -> Rig:
    """The rig (`rig.load_rig` when given its folder), checked for what preprocessing needs: one image folder
    per calibrated camera, finite calibration values, at least one frame. Errors name the file and the camera.
    Given a Rig, nothing is read again (the folder listing only)."""
    rig = rig if isinstance(rig, Rig) else load_rig(rig)
    images = rig.dir / "images"
    folders = sorted(p.name for p in images.iterdir() if p.is_dir()) if images.is_dir() else []
    if sorted(rig.names) != folders:
        raise PreprocessError(f"{images}: camera folders {folders} but {rig.calibration_file} has {len(rig.cams)} "
                              f"cameras named {rig.names} in rig.json; they must match one to one")
    check_calibration(rig.cams, rig.calibration_file)
    if not rig.frames:
        raise PreprocessError(f"{rig.dir / 'rig.json'}: lists no frames")
    return rig


@contextmanager
def single_threaded_libraries() -> Iterator[None]:
    """torch and OpenCV each on one thread while frames run in parallel (their own thread pools on top of
    ours only fight over the cores: torch's intra-op pool made small ops 10x slower); restored after."""
    torch_threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv_threads)


def sample_name(frame: int) -> str:
    return f"frame_{frame:06d}"


SAMPLE_NAME = re.compile(r"frame_\d{6,}")  # what sample_name writes


def _one_frame(rig: Rig, frame: int, out_dir: Path, cfg: PreprocessConfig) -> Path:
    """Read, preprocess and write one frame; every failure becomes a PreprocessError naming the frame
    (OpenCV's own cv2.error included, so on_error="skip" can skip it like any other bad frame)."""
    try:
        rf = read_rig_frame(rig, frame)
        rgba, out = preprocess_frame(rf, cfg)
        return write_sample(out_dir / sample_name(frame), rgba, out)
    except RigError as e:  # PreprocessError too
        raise PreprocessError(f"rig frame {frame}: {e}") from e
    except cv2.error as e:
        detail = " ".join(str(e).split())
        raise PreprocessError(f"rig frame {frame} ({rig.dir}): OpenCV failed: {detail}; check this frame's images "
                              "and masks (readable, 8-bit, the calibrated size) or leave it out with frames=[...]"
                              ) from e


def own_sample_dirs(out_dir: Path) -> list[Path]:
    """Folders under out_dir that look like samples preprocess_rig wrote: frame_XXXXXX/ holding opencv_cameras.json."""
    return sorted(p.parent for p in out_dir.glob("frame_*/opencv_cameras.json") if SAMPLE_NAME.fullmatch(p.parent.name))


def remove_samples_except(out_dir: Path, keep: set[str]) -> list[Path]:
    """Delete this module's sample folders under out_dir whose name is not in `keep` -> the removed folders.

    A rerun with fewer (or failing) frames must not leave older samples behind: grade_dataset and the list
    files take every sample folder in out_dir as part of the dataset. Other files and folders are left alone.
    """
    stale = [d for d in own_sample_dirs(out_dir) if d.name not in keep]
    for d in stale:
        shutil.rmtree(d)
    return stale


def preprocess_rig(rig: Rig | str | Path, out_dir: str | Path, method: str = "standard_camera",
                   frames: Sequence[int] | None = None, size: int = FACELIFT_SIZE,
                   config: PreprocessConfig | None = None) -> list[Path]:
    """Every frame of a rig (or `frames`) -> FaceLift samples out_dir/frame_XXXXXX/; returns their folders.

    `rig`: a `Rig` (`rig.load_rig`, read once and passed to every call) or its folder (read here).

    `method` is a method or a named variant (VARIANTS, e.g. "standard_camera_zoom"); it and `size` override
    those fields of `config`, whose other fields (fills, workers, ...) apply. Frames run in a pool of
    `config.workers` threads (OpenCV and torch release the GIL; both are kept single-threaded meanwhile).
    With on_error="skip" bad frames are left out and listed with their errors in
    out_dir/preprocess_errors.json; with "raise" (default) the first bad frame stops the run.
    out_dir ends up holding this run's samples only: sample folders of an earlier run (frame_XXXXXX/ with
    opencv_cameras.json) for frames not in `frames` are removed first, those of frames skipped now after.
    """
    if method not in VARIANTS:
        raise ValueError(f"preprocess_rig: unknown method {method!r}; choose from {sorted(VARIANTS)}")
    base = config or PreprocessConfig()
    # distance_mode belongs to standard_camera: a config made for it must not make other methods fail.
    mode = base.distance_mode if VARIANTS[method]["method"] == "standard_camera" else "fixed"
    cfg = dataclasses.replace(base, **{"distance_mode": mode, **VARIANTS[method], "size": size})
    out_dir = Path(out_dir)
    rig = checked_rig(rig)
    all_frames = rig.frames
    frames = all_frames if frames is None else [int(f) for f in frames]
    unknown = sorted(set(frames) - set(all_frames))
    if unknown:
        raise PreprocessError(f"{rig.dir / 'rig.json'}: frames {unknown[:10]} are not in this rig (it has "
                              f"{len(all_frames)} frames, {all_frames[0]}..{all_frames[-1]})")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_samples_except(out_dir, {sample_name(f) for f in frames})
    errors_file = out_dir / "preprocess_errors.json"
    errors_file.unlink(missing_ok=True)
    written, errors = [], {}
    with single_threaded_libraries(), ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        futures = {f: pool.submit(_one_frame, rig, f, out_dir, cfg) for f in frames}
        for f, fut in tqdm(futures.items(), desc=f"preprocess {cfg.method}", total=len(frames), leave=False):
            try:
                written.append(fut.result())
            except (PreprocessError, ValueError, OSError, cv2.error) as e:  # OSError: disk full, unreadable file
                if cfg.on_error == "raise":
                    for other in futures.values():
                        other.cancel()
                    raise
                errors[f] = str(e)
    if errors:
        remove_samples_except(out_dir, {p.name for p in written})  # an earlier run's copy of a skipped frame
        errors_file.write_text(json.dumps({"n_skipped": len(errors), "errors": {str(k): v for k, v in errors.items()}},
                                          indent=1))
    return written


# --- consistency checks ---------------------------------------------------------------------------------------
def sample_normalization(cams: Cameras) -> tuple[float, np.ndarray]:
    """(scale, translation [3]) of a preprocessed sample: x_facelift = scale * (x_rig + translation)."""
    norm = cams.meta.get("normalization")
    if not norm:
        raise ValueError("opencv_cameras.json has no 'normalization'; it was not written by preprocess_rig")
    return float(norm["scale"]), np.asarray(norm["translation"], dtype=np.float64)


def train_val_split(sample_dirs: Sequence[str | Path], val_fraction: float = 0.2) -> tuple[list[Path], list[Path]]:
    """Split by time: the last ceil(val_fraction * n) samples (in the given order) are validation, the rest
    training (consecutive rig frames are near-duplicates, so a random split would leak). Needs >= 2 samples."""
    dirs = [Path(d) for d in sample_dirs]
    if len(dirs) < 2 or not 0 < val_fraction < 1:
        raise ValueError(f"train_val_split: need >= 2 samples and 0 < val_fraction < 1, got {len(dirs)} samples "
                         f"and val_fraction={val_fraction}")
    n_val = min(len(dirs) - 1, max(1, math.ceil(val_fraction * len(dirs))))
    return dirs[:-n_val], dirs[-n_val:]
