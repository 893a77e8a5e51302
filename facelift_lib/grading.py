"""Quality grade of a preprocessed dataset: does each view frame the mouse the way training needs, and do the
written cameras agree with the written pixels?

Definitions (mask = alpha > 0.5 of the written RGBA; px are "512-equivalent": measured at the written size W
and multiplied by 512 / W, so datasets written at 128² and 512² compare directly):

- size: sqrt(mask area) in 512-equivalent px, one per view.
- size CV per camera (graded, `size_cv_per_camera`): for each rig camera, the coefficient of variation std/mean
  (population std) of its size across the samples; mean over cameras. What a model sees of one camera from
  frame to frame. (The cross-view CV, `size_cv_within_sample_*`, is reported only: with one scale per sample,
  the geometry-preserving choice, views of one frame differ in size by perspective, e.g. camera distances
  of 246-414 mm on the real rig, and no exact method can make that small.) `size_cv` pools every view
  (reported), `size_cv_across_samples` is the CV of the per-sample mean size (reported).
- CoM offset (graded, `com_offset_px`): distance from the mask's centre of mass (pixel centres at +0.5) to the
  image centre (W/2, H/2), 512-equivalent px, mean over the non-empty views.
- clipped (graded as `clip_rate`): a mask pixel in the first/last row/column of the written image that the
  preprocessing caused, i.e. in a view whose raw rig mask did not already touch the raw border (a mouse cut
  by the camera is the recording's, reported as `raw_border_rate`; `clip_rate_all` counts every edge view).
  Empty and near-empty views (area < NEAR_EMPTY_FRACTION of the image) count as clipped: the mouse is not in
  them; so do views whose raw rig mask was near-empty (raw_near_empty below), whatever a per-view scale made
  of them. Any such view rules out grade A.
- focal CV (graded, `focal_cv`): CV of the written focal lengths within a sample, mean over samples. FaceLift's
  views share one focal; one scale per sample keeps the rig's own spread (~1 % on markerless_mouse_1), a
  per-view focal (bbox_centered, ~25 %) equalises sizes by giving up that geometry.
- camera agreement (graded, `camera_agreement`): distance between the mask's centre of mass and the written
  camera's projection of the sample's world origin (the triangulated mouse centre every method normalises
  to), as a fraction of the view's size (sqrt area); mean over the non-empty views (`camera_agreement_px`:
  the same in 512-equivalent px). ~0.10 for every method whose cameras match its pixels (what is left is the
  gap between a 2D centroid and the 3D centre: tail, perspective); ghost pixels or wrong cameras raise it.
- raw_near_empty: the raw rig mask had under preprocess.RAW_NEAR_EMPTY_FRACTION (0.05 %) of the raw image's
  pixels (the sample JSON's `raw_mask_near_empty`, set by preprocess_frame): a speck, not a mouse.
  `raw_near_empty_views` in the summary counts them.

What each method controls (METHOD_CONTROLS): bbox_uniform the crop (no clipping, one scale per frame),
bbox_centered the box size per view (per-view focal), pixel_based the CoM (exactly centred), one scale per
sample and no clipping, standard_camera the cameras (FaceLift intrinsics, looking at the mouse centre, camera
distances kept), standard_camera_zoom also the size per camera (approximate cameras). The grade applies one
set of limits to every method, so grades compare; the summary lists the numbers its method controls
("controls") and the grade each number alone would give ("grade_by_number"), so a grade says what held it.

Dataset checks against a rig's ground truth (`gt/`): `reprojection_error` (the JSON bookkeeping: written
cameras vs the stored raw-to-image maps), `mask_consistency` (the pixels: the true mouse through the written
cameras vs the written alpha, `metrics.mask_iou`) and `consistency_table` (both, per view of every sample).

Grades, first that holds (GRADE_LIMITS): A = size CV per camera < 10 %, CoM offset < 3 px, no clipped view,
focal CV < 2 %, camera agreement < 0.15; B = < 20 %, < 10 px, clip rate < 1 %, focal CV < 2 %, < 0.15;
C = < 30 %, < 25 px, < 5 %, any focal, < 0.25; D otherwise. (Objects in FaceLift's own training renders vary
in apparent size with their shape, so a 10-20 % size spread is ordinary; a centre 25 px off at 512 is ~5 % of
the image.)
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from facelift_lib.calibration import project_points_opencv, undistort_normalized
from facelift_lib.cameras import FACELIFT_SIZE, Cameras
from facelift_lib.gaussians import Gaussians
from facelift_lib.io import CAMERA_FILE, image_paths, load_sample
from facelift_lib.metrics import mask_iou
from facelift_lib.preprocess import sample_normalization
from facelift_lib.render import render_gaussians
from facelift_lib.warp import apply_homography

REFERENCE_SIZE = 512          # px scale of the reported sizes and offsets
NEAR_EMPTY_FRACTION = 0.001   # mask area below this fraction of the image: the view is (near-)empty
REPORT_FILE = "grading.json"
VIEWS_FILE = "grading_views.csv"


@dataclass(frozen=True)
class GradeLimits:
    """Upper limits of one grade (strict <): size_cv (per camera), com_offset_px, clip_rate (0 means no clipped
    view at all), focal_cv, camera_agreement (fraction of the mouse size)."""

    size_cv: float
    com_offset_px: float
    clip_rate: float
    focal_cv: float = math.inf
    camera_agreement: float = math.inf

    def holds(self, size_cv: float, com_offset_px: float, clip_rate: float, focal_cv: float = 0.0,
              camera_agreement: float = 0.0) -> bool:
        clip_ok = clip_rate == 0 if self.clip_rate == 0 else clip_rate < self.clip_rate
        return (size_cv < self.size_cv and com_offset_px < self.com_offset_px and clip_ok
                and focal_cv < self.focal_cv and camera_agreement < self.camera_agreement)


GRADE_LIMITS: dict[str, GradeLimits] = {
    "A": GradeLimits(size_cv=0.10, com_offset_px=3.0, clip_rate=0.0, focal_cv=0.02, camera_agreement=0.15),
    "B": GradeLimits(size_cv=0.20, com_offset_px=10.0, clip_rate=0.01, focal_cv=0.02, camera_agreement=0.15),
    "C": GradeLimits(size_cv=0.30, com_offset_px=25.0, clip_rate=0.05, focal_cv=math.inf, camera_agreement=0.25),
}
# summary key of each graded number, in GradeLimits order
GRADED = {"size_cv": "size_cv_per_camera", "com_offset_px": "com_offset_px", "clip_rate": "clip_rate",
          "focal_cv": "focal_cv", "camera_agreement": "camera_agreement"}

# The graded numbers each preprocessing method sets by construction (the others it only measures).
METHOD_CONTROLS: dict[str, tuple[str, ...]] = {
    "bbox_uniform": ("clip_rate", "focal_cv"),
    "bbox_centered": ("clip_rate",),
    "pixel_based": ("com_offset_px", "clip_rate", "focal_cv"),
    "standard_camera": ("focal_cv", "camera_agreement"),
    "standard_camera_zoom": ("size_cv_per_camera", "focal_cv"),
}


def grade_preprocessing(size_cv: float, com_offset_px: float, clip_rate: float, focal_cv: float = 0.0,
                        camera_agreement: float = 0.0) -> str:
    """'A'..'D' from the graded dataset numbers (see the module docstring; NaN anywhere gives 'D').
    size_cv is the per-camera size CV (`size_cv_per_camera` of the summary)."""
    for grade, limits in GRADE_LIMITS.items():
        if limits.holds(size_cv, com_offset_px, clip_rate, focal_cv, camera_agreement):
            return grade
    return "D"


def grade_of_number(name: str, value: float) -> str:
    """The grade one graded number alone allows (name: a GradeLimits field), the others taken as perfect."""
    return grade_preprocessing(**{**{k: 0.0 for k in GRADED}, name: value})


def _alpha(path: Path, view: int) -> np.ndarray:
    """The alpha channel of a written RGBA PNG as a bool mask (> half of full scale)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} (view {view}): image missing; re-run preprocessing for this sample")
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path} (view {view}): cannot be decoded (corrupt PNG?); re-run preprocessing")
    if img.ndim != 3 or img.shape[2] != 4:
        raise ValueError(f"{path} (view {view}): no alpha channel; FaceLift samples carry the mask as alpha")
    full = 65535 if img.dtype == np.uint16 else 255
    return img[..., 3] > full / 2


def view_rows(sample_dir: str | Path) -> list[dict[str, Any]]:
    """One row per view of a sample: size, CoM, offset, clipping, emptiness (written and raw), raw-border flag
    (see the module docstring)."""
    sample_dir = Path(sample_dir)
    cams = Cameras.from_opencv_json(sample_dir / CAMERA_FILE)
    extras = cams.frame_extras or [{} for _ in range(len(cams))]
    method = cams.meta.get("preprocess_method")
    if cams.meta.get("preprocess", {}).get("distance_mode") == "per_view_zoom":
        method = "standard_camera_zoom"
    origin_uv, origin_z = cams.project(torch.zeros(1, 3, dtype=torch.float64))   # the sample's mouse centre
    rows = []
    for v, path in enumerate(image_paths(sample_dir, cams)):
        m = _alpha(path, v)
        H, W = m.shape
        to512 = REFERENCE_SIZE / W
        area = int(m.sum())
        mo = cv2.moments(m.astype(np.uint8), binaryImage=True)
        com = (mo["m10"] / area + 0.5, mo["m01"] / area + 0.5) if area else (math.nan, math.nan)
        clipped_edge = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
        near_empty = area < NEAR_EMPTY_FRACTION * H * W
        raw_near_empty = bool(extras[v].get("raw_mask_near_empty", False))
        raw_border = bool(extras[v].get("raw_mask_touches_border", False))
        ou, ov = (float(x) for x in origin_uv[v, 0]) if origin_z[v, 0] > 0 else (math.nan, math.nan)
        rows.append({
            "sample": sample_dir.name, "view": v, "camera": extras[v].get("raw_camera", str(v)), "method": method,
            "size_px": W, "area_px": area, "area_fraction": area / (H * W),
            "size_512": math.sqrt(area) * to512,
            "com_x": com[0], "com_y": com[1],
            "com_offset_512": math.hypot(com[0] - W / 2, com[1] - H / 2) * to512,
            "camera_agreement_512": math.hypot(com[0] - ou, com[1] - ov) * to512,
            "camera_agreement": math.hypot(com[0] - ou, com[1] - ov) / math.sqrt(area) if area else math.nan,
            "fx_512": float(cams.fx[v]) * to512,
            "empty": area == 0, "near_empty": near_empty, "raw_near_empty": raw_near_empty,
            "edge": clipped_edge,
            "clipped": (clipped_edge and not raw_border) or near_empty or raw_near_empty,
            "raw_border": raw_border,
        })
    return rows


def _cv(x: pd.Series) -> float:
    return float(x.std(ddof=0) / x.mean()) if len(x) and x.mean() > 0 else math.nan


def summarize(views: pd.DataFrame) -> dict[str, Any]:
    """Dataset numbers and grade from the per-view table (see the module docstring for every definition)."""
    ok = views[~views["empty"]]
    per_sample = ok.groupby("sample").agg(size_mean=("size_512", "mean"), size_cv=("size_512", _cv),
                                          com_offset_px=("com_offset_512", "mean"))
    per_sample["clipped_views"] = views.groupby("sample")["clipped"].sum()
    per_camera = ok.groupby("camera")["size_512"].agg(_cv)
    size_cv_per_camera = float(per_camera.mean()) if ok["sample"].nunique() > 1 else 0.0  # one sample: no variation
    focal_cv = float(views.groupby("sample")["fx_512"].agg(_cv).mean())
    offset, clip_rate = float(ok["com_offset_512"].mean()), float(views["clipped"].mean())
    agreement = float(ok["camera_agreement"].mean())
    methods = sorted({m for m in views["method"] if isinstance(m, str)})
    method = methods[0] if len(methods) == 1 else methods
    return {
        "method": method,
        "n_samples": int(views["sample"].nunique()), "n_views": int(len(views)),
        "size_cv_per_camera": size_cv_per_camera, "com_offset_px": offset, "clip_rate": clip_rate,
        "focal_cv": focal_cv, "camera_agreement": agreement,
        "grade": grade_preprocessing(size_cv_per_camera, offset, clip_rate, focal_cv, agreement),
        "grade_by_number": {key: grade_of_number(name, value) for name, key, value in zip(
            GRADED, GRADED.values(), (size_cv_per_camera, offset, clip_rate, focal_cv, agreement))},
        "controls": list(METHOD_CONTROLS.get(method, ())) if isinstance(method, str) else [],
        "camera_agreement_px": float(ok["camera_agreement_512"].mean()),
        "size_cv": _cv(ok["size_512"]), "clip_rate_all": float((views["edge"] | views["clipped"]).mean()),
        "size_cv_per_camera_max": float(per_camera.max()) if ok["sample"].nunique() > 1 else 0.0,
        "camera_agreement_px_max": float(ok["camera_agreement_512"].max()),
        "size_mean_512": float(ok["size_512"].mean()),
        "size_cv_within_sample_mean": float(per_sample["size_cv"].mean()),
        "size_cv_within_sample_max": float(per_sample["size_cv"].max()),
        "size_cv_across_samples": _cv(per_sample["size_mean"]),
        "com_offset_px_max": float(ok["com_offset_512"].max()),
        "area_fraction_mean": float(ok["area_fraction"].mean()),
        "empty_views": int(views["empty"].sum()), "near_empty_views": int(views["near_empty"].sum()),
        "raw_near_empty_views": int(views["raw_near_empty"].sum()),
        "clipped_views": int(views["clipped"].sum()), "raw_border_rate": float(views["raw_border"].mean()),
        "grade_limits": {g: asdict(lim) for g, lim in GRADE_LIMITS.items()},
        "per_sample": per_sample.reset_index().to_dict(orient="records"),
    }


def sample_dirs(dataset_dir: str | Path) -> list[Path]:
    """The sample folders (those holding opencv_cameras.json) directly under dataset_dir, sorted."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {dataset_dir}")
    dirs = sorted(p.parent for p in dataset_dir.glob(f"*/{CAMERA_FILE}"))
    if not dirs:
        raise FileNotFoundError(f"{dataset_dir}: no sample folders (*/{CAMERA_FILE}); run preprocess_rig first")
    return dirs


def grade_dataset(dataset_dir: str | Path, write_report: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Grade every sample under dataset_dir -> (per-view table, one row per view; summary dict).

    The summary has size_cv, com_offset_px, clip_rate, grade, per-sample CV stats and the limits used.
    With write_report, dataset_dir/grading.json (summary) and grading_views.csv (the table) are written.
    """
    dataset_dir = Path(dataset_dir)
    rows = [r for d in tqdm(sample_dirs(dataset_dir), desc="grade", leave=False) for r in view_rows(d)]
    views = pd.DataFrame(rows)
    summary = summarize(views)
    if write_report:
        (dataset_dir / REPORT_FILE).write_text(json.dumps(summary, indent=1, default=float))
        views.to_csv(dataset_dir / VIEWS_FILE, index=False)
    return views, summary


# --- dataset checks against the ground truth (rig frames with gt/) ----------------------------------------
def reprojection_error(sample_dir: str | Path, points_world_rig: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """Do the written cameras see 3D points where the written pixels show them?

    points_world_rig [N,3] (rig units) go through the sample's normalisation and the written cameras
    (-> uv_cam), and through the raw cameras as the raw images see them (lens distortion, then the whole K,
    skew included: `project_points_opencv`), back through the inverse lens model (`undistort_normalized`,
    the map the warp inverts) and each view's stored image transform `raw_to_image` (-> uv_img, where the
    warp put those points' pixels). Returns {"mean_px", "max_px", "per_view_mean_px" [V], "per_view_max_px"
    [V]} over the points in front of every camera (and, with distortion, inside its lens model's valid
    region): ~1e-10 px for exact methods, the size of the approximation for per_view_zoom.

    For exact methods this agrees by construction: the written camera K_img [R_rel R | R_rel t] and the
    stored raw_to_image T = K_img R_rel K^-1 come from the same plan, so the two sides are one algebra and
    only float rounding separates them. It checks the JSON bookkeeping (normalisation, raw_to_image, written
    cameras), not the pixels, and cannot see a wrong warp. The pixels are checked by `mask_consistency`
    (ground-truth silhouette through the written cameras vs the written alpha) and by the marker-blob test in
    tests/test_preprocess.py (blobs drawn at known 3D points found where the written cameras project them).
    For per_view_zoom it measures a real gap (cameras moved to the target distance, pixels only zoomed).
    """
    cams = Cameras.from_opencv_json(Path(sample_dir) / "opencv_cameras.json")
    scale, trans = sample_normalization(cams)
    X = np.asarray(points_world_rig, dtype=np.float64).reshape(-1, 3)
    uv_cam, z_cam = cams.project(torch.from_numpy(scale * (X + trans)))
    ex = cams.frame_extras
    has_dist = all("raw_dist" in e for e in ex)
    raw = Cameras(K=torch.tensor([e["raw_K"] for e in ex], dtype=torch.float64),
                  w2c=torch.tensor([e["raw_w2c"] for e in ex], dtype=torch.float64), width=1, height=1,
                  dist=torch.tensor([e["raw_dist"] for e in ex], dtype=torch.float64) if has_dist else None)
    uv_raw, z_raw = raw.project(torch.from_numpy(X))
    front = ((z_cam > 0) & (z_raw > 0)).all(0).numpy()
    uv_raw = uv_raw.numpy()
    if has_dist:  # the raw pixels the lens really produced, taken back to the pinhole pixels the warp starts from
        K_raw = raw.K.numpy()
        seen = project_points_opencv(raw, X).numpy()
        for v in range(len(raw)):
            xd = np.concatenate([seen[v], np.ones_like(seen[v][:, :1])], -1) @ np.linalg.inv(K_raw[v]).T
            xn = undistort_normalized(xd[:, :2], raw.dist[v].numpy())
            uv_raw[v] = xn @ K_raw[v, :2, :2].T + K_raw[v, :2, 2]
        front &= np.isfinite(uv_raw).all(-1).all(0)
    T = np.asarray([e["raw_to_image"] for e in ex], dtype=np.float64)
    uv_img = apply_homography(T, uv_raw)
    err = np.linalg.norm(uv_cam.numpy()[:, front] - uv_img[:, front], axis=-1)  # [V,N]
    return {"mean_px": float(err.mean()), "max_px": float(err.max()), "per_view_mean_px": err.mean(1).tolist(),
            "per_view_max_px": err.max(1).tolist()}


def mask_consistency(sample_dir: str | Path, gt_gaussians_world_rig: Gaussians, threshold: float = 0.5
                     ) -> list[float]:
    """IoU per view between the written alpha (> threshold) and the ground-truth mouse rendered through the
    written cameras (alpha > threshold), the gaussians mapped by the sample's normalisation (`metrics.mask_iou`:
    NaN for a view where both are empty)."""
    images, cams = load_sample(sample_dir, background=None)
    scale, trans = sample_normalization(cams)
    g = gt_gaussians_world_rig.to(torch.float32).transformed(scale, torch.from_numpy(trans).float())
    _, alpha, _ = render_gaussians(g, cams)
    return mask_iou(alpha[..., 0], images[:, 3], threshold).tolist()


def consistency_table(sample_dirs: Sequence[str | Path], gt_gaussians: Any) -> pd.DataFrame:
    """Per view of every sample: reprojection error of the ground-truth gaussian centres and mask IoU.

    gt_gaussians: a mapping or callable rig frame -> Gaussians (rig world); the frame of a sample is the
    `preprocess.rig_frame` in its JSON. Columns: sample, frame, view, reproj_mean_px, reproj_max_px, iou,
    fx_512 (the written focal length in 512-equivalent px: per-view values differ for bbox_centered).
    """
    get = gt_gaussians if callable(gt_gaussians) else gt_gaussians.__getitem__
    rows = []
    for d in tqdm(sample_dirs, desc="consistency", leave=False):
        d = Path(d)
        cams = Cameras.from_opencv_json(d / "opencv_cameras.json")
        frame = int(cams.meta["preprocess"]["rig_frame"])
        g = get(frame)
        err = reprojection_error(d, g.means.double().numpy())
        iou = mask_consistency(d, g)
        for v in range(len(cams)):
            rows.append({"sample": d.name, "frame": frame, "view": v, "reproj_mean_px": err["per_view_mean_px"][v],
                         "reproj_max_px": err["per_view_max_px"][v], "iou": iou[v],
                         "fx_512": float(cams.fx[v]) * FACELIFT_SIZE / cams.width})
    return pd.DataFrame(rows)
