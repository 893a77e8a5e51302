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
6. one resampling per view (`warp.warp_view`: ``cv2.warpAffine`` / ``warpPerspective``, or ``remap`` through
   `warp.lens_maps` when there is distortion), RGBA PNG (alpha = warped mask) + opencv_cameras.json. A calibration's skew is
   absorbed there exactly (T starts from the whole raw K); written cameras have none. Output rays beyond the
   radius where the lens polynomial folds back are outside the frame (`calibration.distortion_valid`), so a strong
   lens cannot paint ghost copies of the mouse.

Pixel convention: continuous pixel coordinates with pixel centres at +0.5 (DESIGN.md) everywhere in this
module; the pixel maps, lens maps and warps themselves live in `warp` (which conjugates by the half pixel
right before OpenCV).
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
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facelift_lib.cameras import FACELIFT_DISTANCE, FACELIFT_FOCAL, FACELIFT_SIZE, Cameras, look_at_w2c, similarity_normalize
from facelift_lib.gaussians import axis_angle_matrix
from facelift_lib.io import save_sample
from facelift_lib.rig import Rig, RigError, RigFrame, load_rig, read_rig_frame
from facelift_lib.warp import crop_resize_matrix, local_scale, rotation_homography, skew_free, undistort_mask, warp_view

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


# --- camera geometry of the plan (pure numpy, float64) --------------------------------------------------
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
        R_rel = axis_angle_matrix(torch.from_numpy(axis), torch.tensor(math.atan2(s, c), dtype=torch.float64)).numpy()
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


# --- masks in skew-free pinhole pixels -------------------------------------------------------------------
def pinhole_mask_stats(masks: Sequence[np.ndarray], K: np.ndarray, dist: np.ndarray | None) -> MaskStats:
    """`mask_stats` of raw masks [V] of cameras K [V,3,3] (+ dist [V,5]) measured in the pixels of their
    skew-free pinhole cameras (`undistort_mask`; whole masks, however far the undistortion moves them);
    touches_border is left False: whether the raw mask touches the raw border is the raw masks' statistic."""
    canvases = [undistort_mask(m, K[v], None if dist is None else dist[v]) for v, m in enumerate(masks)]
    st = mask_stats([c for c, _ in canvases])
    shift = np.array([o for _, o in canvases], dtype=np.float64)
    return MaskStats(area=st.area, com=st.com + shift, bbox=st.bbox + np.concatenate([shift, shift], -1),
                     touches_border=np.zeros(len(masks), dtype=bool))


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
