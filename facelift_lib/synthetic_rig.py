"""The synthetic rig: a virtual copy of the 6-camera markerless_mouse_1 rig films the procedural mouse
(`facelift_lib.mouse`) and writes a rig folder in the DESIGN.md layout (`facelift_lib.rig` reads it back).

Also here: rendering raw views exactly through cameras with skew and lens distortion (`render_raw_views`),
`ensure_rig` (build the smoke rig once, refuse one built with other parameters) and `workbook_rig` (the rig
folder a notebook works on: a real one, or this synthetic one).

Public API: `markerless_mouse_rig`, `RIG_LENSES`, `RIG_SPECS`, `raw_view_maps`, `render_raw_views`, `make_rig_dataset`,
`ensure_rig`, `workbook_rig`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facelift_lib.calibration import OPENCV_TO_WORKBOOK_PX, load_mammal_pkl, save_mammal_pkl, undistort_normalized
from facelift_lib.cameras import Cameras, intrinsics, look_at_w2c
from facelift_lib.gaussians import Gaussians, load_ply, save_ply
from facelift_lib.io import write_image, write_mask
from facelift_lib.mouse import (ARENA_RADIUS_MM, arena_params, body_center, mouse_gaussians_with_parts,
                                mouse_trajectory)
from facelift_lib.render import render, render_gaussians
from facelift_lib.rig import CALIBRATION_FILE, IMAGE_EXTS, RIG_FILE, frame_file, gt_centers_file, gt_frame_file

# --- the virtual rig's cameras ------------------------------------------------------------------------
RIG_WIDTH, RIG_HEIGHT = 1152, 1024
RIG_TARGET_MM = (0.0, 0.0, 18.0)  # the cameras sit near the floor, so they aim a little above it
# Virtual copy of the published markerless_mouse_1 rig (MAMMAL): per camera azimuth°, elevation° (of the
# camera seen from the arena centre), distance mm, fx px, principal point offset from the image centre px.
RIG_SPECS = (
    dict(az=-144.0, el=1.0, dist=310.0, fx=1645.0, dcx=42.0, dcy=-18.0),
    dict(az=31.0, el=15.0, dist=326.0, fx=1668.0, dcx=-35.0, dcy=27.0),
    dict(az=94.0, el=2.0, dist=303.0, fx=1639.0, dcx=58.0, dcy=12.0),
    dict(az=-22.0, el=1.0, dist=318.0, fx=1652.0, dcx=-12.0, dcy=-40.0),
    dict(az=157.0, el=15.0, dist=332.0, fx=1671.0, dcx=25.0, dcy=51.0),
    dict(az=-77.0, el=18.0, dist=315.0, fx=1660.0, dcx=-61.0, dcy=-7.0),
)
RIG_FY_OVER_FX = 1.005
# Lenses of the virtual rig. "pinhole": none. "real": the skews (px at 1152x1024) and OpenCV distortion
# (k1, k2, p1, p2, k3) of the real markerless_mouse_1 DANNCE calibration, cam_i = Camera{i+1}. The issue that
# reported them gives the coefficients of Camera1, 2 and 4; those of cam_2, cam_4, cam_5 are stand-ins of the
# same kind (strong k3 < 0, so the radial model folds back at r ~0.65-0.75: preprocessing must guard it).
RIG_LENSES: dict[str, tuple[dict[str, object], ...] | None] = {
    "pinhole": None,
    "real": (
        dict(skew=-5.89, dist=(-0.1593, 0.9403, -0.00109, -0.00379, -2.7116)),   # Camera1
        dict(skew=1.39, dist=(-0.1511, 0.9001, -0.01099, -0.00148, -3.0223)),    # Camera2
        dict(skew=-0.91, dist=(-0.1300, 0.5000, 0.00080, -0.00120, -1.6000)),    # Camera3 (stand-in)
        dict(skew=-5.89, dist=(-0.1000, 0.0455, 0.0005, -0.00089, -0.9931)),     # Camera4
        dict(skew=-1.27, dist=(-0.1450, 0.7800, -0.00200, 0.00100, -2.4000)),    # Camera5 (stand-in)
        dict(skew=-4.93, dist=(-0.1150, 0.3000, 0.00150, 0.00060, -1.2000)),     # Camera6 (stand-in)
    ),
}


def markerless_mouse_rig(scale: float = 1.0, lens: str = "pinhole") -> Cameras:
    """The 6 rig cameras (cam_0..cam_5) at 1152x1024 x `scale`, world mm, Z-up, OpenCV.

    Intrinsics are scaled by the exact size ratio of the rounded image size (pixel centres at +0.5,
    so u' = u * W'/W holds exactly). `lens` (RIG_LENSES): "pinhole", or "real" for the real rig's skew
    (scaled with the image, like fx) and distortion coefficients (normalised coordinates: unchanged).
    """
    if lens not in RIG_LENSES:
        raise ValueError(f"markerless_mouse_rig: lens must be one of {sorted(RIG_LENSES)}, got {lens!r}")
    W, H = round(RIG_WIDTH * scale), round(RIG_HEIGHT * scale)
    if W < 16 or H < 16:
        raise ValueError(f"markerless_mouse_rig: scale={scale} gives a {W}x{H} image; use scale >= {16 / RIG_HEIGHT:.3f}")
    sx, sy = W / RIG_WIDTH, H / RIG_HEIGHT
    az = torch.tensor([s["az"] for s in RIG_SPECS], dtype=torch.float64).deg2rad()
    el = torch.tensor([s["el"] for s in RIG_SPECS], dtype=torch.float64).deg2rad()
    dist = torch.tensor([s["dist"] for s in RIG_SPECS], dtype=torch.float64)
    pos = dist[:, None] * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)
    fx = torch.tensor([s["fx"] for s in RIG_SPECS], dtype=torch.float64)
    K = intrinsics(fx * sx, fx * RIG_FY_OVER_FX * sy,
                   [(RIG_WIDTH / 2 + s["dcx"]) * sx for s in RIG_SPECS],
                   [(RIG_HEIGHT / 2 + s["dcy"]) * sy for s in RIG_SPECS], len(RIG_SPECS))
    dist = None
    if RIG_LENSES[lens] is not None:
        K[:, 0, 1] = torch.tensor([c["skew"] for c in RIG_LENSES[lens]], dtype=torch.float64) * sx
        dist = torch.tensor([c["dist"] for c in RIG_LENSES[lens]], dtype=torch.float64)
    return Cameras(K=K, w2c=look_at_w2c(pos, target=RIG_TARGET_MM), width=W, height=H, dist=dist,
                   names=[f"cam_{i}" for i in range(len(RIG_SPECS))],
                   meta={"camera_type": "markerless_mouse_rig", "units": "mm", "lens": lens})


# --- raw views of a camera with skew and distortion ---------------------------------------------------------
@dataclass
class RawViewMap:
    """How to render one raw view of a camera with skew/distortion exactly: render the skew-free pinhole
    camera K_canvas [3,3] on a (width x height) canvas, then cv2.remap it with map_x/map_y (float32 [H,W],
    OpenCV pixel convention) to the raw pixels; raw pixels with no ray (beyond the lens fold) map outside."""

    K_canvas: torch.Tensor
    width: int
    height: int
    map_x: np.ndarray
    map_y: np.ndarray


def raw_view_maps(cams: Cameras) -> list[RawViewMap | None]:
    """Per camera, the RawViewMap of `render_raw_views` (None where the camera is a plain pinhole).

    Each raw pixel centre p goes K^-1 p (the whole K: skew included) -> `calibration.undistort_normalized`
    (exact inverse inside the lens model's valid region) -> the skew-free pinhole K0 on a canvas that holds
    every such point."""
    out: list[RawViewMap | None] = []
    K_all = cams.K.numpy()
    for v in range(len(cams)):
        K = K_all[v]
        dist = None if cams.dist is None else cams.dist[v].numpy()
        if K[0, 1] == 0 and (dist is None or not np.any(dist != 0)):
            out.append(None)
            continue
        ys, xs = np.mgrid[0:cams.height, 0:cams.width].astype(np.float64)
        p = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
        xn = undistort_normalized(p[..., :2], np.zeros(5) if dist is None else dist)
        uv = xn * [K[0, 0], K[1, 1]] + K[:2, 2]                       # skew-free pinhole pixels
        ok = np.isfinite(uv).all(-1)
        x0, y0 = (int(math.floor(uv[ok][:, i].min())) - 2 for i in (0, 1))
        x1, y1 = (int(math.ceil(uv[ok][:, i].max())) + 2 for i in (0, 1))
        K_c = K.copy()
        K_c[0, 1] = 0.0
        K_c[:2, 2] -= (x0, y0)
        uv = uv - (x0, y0) - OPENCV_TO_WORKBOOK_PX                    # canvas pixels, OpenCV convention
        uv[~ok] = -1.0e6
        out.append(RawViewMap(torch.from_numpy(K_c), x1 - x0, y1 - y0, uv[..., 0].astype(np.float32),
                              uv[..., 1].astype(np.float32)))
    return out


def render_raw_views(g: Gaussians, cams: Cameras, maps: list[RawViewMap | None] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The gaussians as the raw cameras see them, skew and lens distortion included -> (premultiplied rgb
    [V,H,W,3], alpha [V,H,W,1]). Pinhole cameras are rendered directly; the others through a skew-free pinhole
    canvas resampled exactly (bilinear) by `raw_view_maps` (pass `maps` to reuse them across frames):
    gsplat has no skew or distortion, so `render` refuses skewed cameras."""
    maps = raw_view_maps(cams) if maps is None else maps
    rgb_out = torch.zeros(len(cams), cams.height, cams.width, 3)
    alpha_out = torch.zeros(len(cams), cams.height, cams.width, 1)
    for v, m in enumerate(maps):
        cam = cams[v]
        if m is None:
            rgb, alpha, _ = render_gaussians(g, cam.replace(dist=None))
            rgb_out[v], alpha_out[v] = rgb[0], alpha[0]
            continue
        rgb, alpha, _ = render(g.means, g.quats, g.scales, g.opacities, g.colors, cam.w2c.to(g.means.dtype),
                               m.K_canvas[None].to(g.means.dtype), m.width, m.height)
        canvas = torch.cat([rgb[0], alpha[0]], -1).numpy().astype(np.float32)
        raw = cv2.remap(canvas, m.map_x, m.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        rgb_out[v], alpha_out[v] = torch.from_numpy(raw[..., :3]), torch.from_numpy(raw[..., 3:])
    return rgb_out, alpha_out


# --- the synthetic rig folder (layout in DESIGN.md; read back by rig.load_rig) -------------------------
ARENA_RGB = (0.16, 0.16, 0.17)  # dark grey floor/walls behind the mouse


def _arena_background(height: int, width: int, seed: int) -> torch.Tensor:
    """[H,W,3] dark arena with a little per-pixel noise (fixed per seed, view and frame)."""
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(height, width, 1, generator=gen) * 0.015
    return (torch.tensor(ARENA_RGB) + noise).clamp(0, 1)


def _clear_synthetic_rig(out: Path) -> None:
    """Prepare a folder for a new synthetic rig; an older synthetic build's frames are removed so none
    outlive it. A folder holding a real rig (a rig.json we did not write) is refused, not overwritten.
    """
    meta_path = out / RIG_FILE
    if meta_path.is_file():
        with open(meta_path) as f:
            if "generator" not in json.load(f):
                raise FileExistsError(f"{meta_path}: {out} holds a real rig (not written by make_rig_dataset); "
                                      "refusing to overwrite it, choose another out_dir")
        meta_path.unlink()  # first: an old rig.json must not vouch for a half-rewritten folder
        for pattern in ("images/cam_*/*.png", "images/cam_*/*.jpg", "masks/cam_*/*.png", "gt/frame_*.ply", "gt/centers.json"):
            for old in out.glob(pattern):
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_rig_dataset(out_dir: str | Path, n_frames: int = 8, seed: int = 0, image_scale: float = 0.25,
                     n_gaussians: int = 4000, fur: str = "brown", image_ext: str = ".png", lens: str = "pinhole",
                     arena_radius_mm: float = ARENA_RADIUS_MM) -> Path:
    """Film the procedural mouse with the virtual markerless rig and write a rig folder (DESIGN.md layout).

    Per frame: the posed gaussians are written to gt/frame_*.ply and *that file* is rendered (so the
    images, masks, calibration and ground truth agree to the bit); RGB is composited over a dark arena,
    mask = alpha > 0.5. `image_ext` ".jpg" writes the RGB frames as JPEG (quality 95, like footage extracted
    from video; faster to decode than noisy PNGs); masks are 1-bit PNGs (io.write_mask: 3x faster to decode
    than 8-bit ones). new_cam.pkl holds the intrinsics at the written image size. rig.json is written
    last, so a folder without it is an interrupted build. Deterministic for a seed. Returns the folder.
    `lens` (RIG_LENSES): "real" gives the cameras the real rig's skew and strong distortion (written into
    new_cam.pkl; views rendered exactly through them by `render_raw_views`). `arena_radius_mm`: how far from
    the centre the mouse wanders (`arena_params`; the default puts it near the image border in ~1/4 of views).
    Both are recorded in rig.json's "generator".
    """
    if image_ext not in IMAGE_EXTS:
        raise ValueError(f"make_rig_dataset: image_ext must be one of {IMAGE_EXTS}, got {image_ext!r}")
    out = Path(out_dir)
    cams = markerless_mouse_rig(image_scale, lens=lens)
    names, V, H, W = list(cams.names), len(cams), cams.height, cams.width
    _clear_synthetic_rig(out)
    # the file holds OpenCV 0-based pixels like a real MAMMAL calibration; we work in pixel centres at +0.5
    save_mammal_pkl(cams, out / CALIBRATION_FILE, pixel_centers="workbook")
    cams = load_mammal_pkl(out / CALIBRATION_FILE, width=W, height=H, pixel_centers="workbook")  # render what was written
    poses = mouse_trajectory(n_frames, seed, fur=fur, params=arena_params(arena_radius_mm))
    maps = raw_view_maps(cams)
    centers = []
    for t in tqdm(range(n_frames), desc=f"rig frames ({V} views, {W}x{H})"):
        g, part = mouse_gaussians_with_parts(poses[t], n_gaussians, seed)
        centers.append([round(float(c), 6) for c in body_center(g, part)])
        g = load_ply(save_ply(g, gt_frame_file(out, t)))
        rgb, alpha = render_raw_views(g, cams, maps)  # no background: premultiplied colour
        for v, name in enumerate(names):
            bg = _arena_background(H, W, seed=int(seed) * 1_000_003 + t * 101 + v)
            image = rgb[v] + (1 - alpha[v]) * bg
            write_image(frame_file(out, "images", name, t, image_ext), image.permute(2, 0, 1))
            write_mask(frame_file(out, "masks", name, t), alpha[v][..., 0] > 0.5)
    gt_centers_file(out).parent.mkdir(exist_ok=True)
    with open(gt_centers_file(out), "w") as f:
        json.dump({"centers_mm": centers}, f, indent=1)
    meta = {"units": "mm", "width": W, "height": H, "n_frames": int(n_frames), "camera_names": names,
            "image_ext": image_ext, "calibration": {"format": "mammal", "file": CALIBRATION_FILE},
            "seed": int(seed), "frames": list(range(n_frames)), "image_scale": float(image_scale),
            "generator": {"kind": "procedural_mouse", "n_gaussians": int(n_gaussians), "fur": fur, "lens": lens,
                          "arena_radius_mm": float(arena_radius_mm)}}
    with open(out / RIG_FILE, "w") as f:
        json.dump(meta, f, indent=1)
    return out


def ensure_rig(rig_dir: str | Path, **smoke_kwargs) -> Path:
    """The rig folder, built with `make_rig_dataset(rig_dir, **smoke_kwargs)` if it has no rig.json yet.

    An existing synthetic rig built with other values of the given parameters is an error (a
    notebook must not silently use another seed or size); a real rig is returned as it is.
    """
    rig_dir = Path(rig_dir)
    if not (rig_dir / RIG_FILE).is_file():
        return make_rig_dataset(rig_dir, **smoke_kwargs)
    with open(rig_dir / RIG_FILE) as f:
        meta = json.load(f)
    # a key an older build did not record had make_rig_dataset's default then (lens, arena_radius_mm: issue 13)
    defaults = {"lens": "pinhole", "arena_radius_mm": 50.0}
    recorded = {**defaults, **meta, **meta.get("generator", {})}
    if "generator" in meta:
        differ = {k: (recorded[k], v) for k, v in smoke_kwargs.items() if k in recorded and recorded[k] != v}
        if differ:
            raise ValueError(f"{rig_dir / RIG_FILE}: the rig there was built with other parameters "
                             f"(recorded, asked) = {differ}; delete {rig_dir} to rebuild it, or ask for what it has")
    return rig_dir


def rig_folder(rig_dir: str | Path | None, out_dir: str | Path) -> Path:
    """Where a notebook's rig lives, without building anything: `rig_dir`, or <out_dir>/rig (00_data's) when None.
    Notebooks after 02 that read the rig's ground truth use this with `workbook.require`."""
    return Path(rig_dir) if rig_dir is not None else Path(out_dir) / "rig"


def workbook_rig(rig_dir: str | Path | None, out_dir: str | Path, **smoke_kwargs) -> Path:
    """The rig folder a notebook works on: `rig_dir` (a real rig in the DESIGN.md layout) or, when None,
    the synthetic rig in <out_dir>/rig, built with `smoke_kwargs` if it is not there yet (`ensure_rig`)."""
    if rig_dir is None:
        return ensure_rig(rig_folder(None, out_dir), **smoke_kwargs)
    rig_dir = Path(rig_dir)
    if not (rig_dir / RIG_FILE).is_file():
        raise FileNotFoundError(f"rig_dir={str(rig_dir)!r} has no {RIG_FILE}: point rig_dir at a rig folder laid out "
                                "as in DESIGN.md, or set rig_dir=None to use the synthetic rig")
    return rig_dir
