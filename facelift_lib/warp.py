"""Pixel maps and the one resampling per view: how preprocessing moves pixels (pure numpy/OpenCV, float64 maps).

- pixel maps [V,3,3] between images: crop + resize (`crop_resize_matrix`), a camera rotated about its centre
  (`rotation_homography`), applying them to points, their local magnification;
- OpenCV's lens model as cv2.remap maps (`lens_maps`: skew included, rays beyond the lens fold map outside the
  image, so a strong lens cannot paint ghost copies), the undistorted frame's extent, masks undistorted into
  the skew-free pinhole camera `skew_free(K)` (`undistort_mask`);
- `warp_view`: one view through K_img R_rel K^-1 (and the lens), reading only the raw window it needs.

Pixel convention: continuous pixel coordinates with pixel centres at +0.5 (DESIGN.md) everywhere in this
module; OpenCV's warps put centres at integers, so matrices are conjugated by the half-pixel shift
(`to_opencv_pixels`, built on `calibration.pixel_offset_matrix`) right before they reach OpenCV.
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from .calibration import (OPENCV_TO_WORKBOOK_PX, distort_normalized_np, distortion_valid, distortion_valid_radius,
                          pixel_offset_matrix, undistort_normalized)


_TO_CV = pixel_offset_matrix(-OPENCV_TO_WORKBOOK_PX)  # centres at +0.5 -> at integers


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


# --- lens maps and warps ------------------------------------------------------------------------------------
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
        cy_cv = opencv_intrinsics(K_src)[1, 2]
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
