"""Quality grade of a preprocessed dataset: is the mouse the same size, centred, and whole in every view?

Definitions (mask = alpha > 0.5 of the written RGBA; px are "512-equivalent": measured at the written size W
and multiplied by 512 / W, so datasets written at 128² and 512² compare directly):

- size: sqrt(mask area) in 512-equivalent px, one per view.
- size CV: coefficient of variation std/mean (population std) of the size. `size_cv` (graded) pools every
  non-empty view of the dataset; `size_cv_within_sample_*` is the CV over the views of one sample
  (mean / max over samples), `size_cv_across_samples` the CV of the per-sample mean size.
- CoM offset: distance from the mask's centre of mass (pixel centres at +0.5) to the image centre (W/2, H/2),
  512-equivalent px. `com_offset_px` (graded) is its mean over the non-empty views.
- clipped: a mask pixel in the first/last row/column of the written image (the mouse runs off the view).
  Empty and near-empty views (area < NEAR_EMPTY_FRACTION of the image) count as clipped too: the mouse is
  not in them; so do views whose raw rig mask was near-empty (raw_near_empty below), whatever a per-view
  scale made of them. `clip_rate` (graded) = clipped views / all views, so any such view rules out grade A.
- raw_near_empty: the raw rig mask had under preprocess.RAW_NEAR_EMPTY_FRACTION (0.05 %) of the raw image's
  pixels (the sample JSON's `raw_mask_near_empty`, set by preprocess_frame): a speck, not a mouse.
  `raw_near_empty_views` in the summary counts them.
- raw_border: the raw rig mask already touched the raw image border (mouse partly outside the camera);
  reported (from the sample JSON), not graded: it is a property of the recording, not of the preprocessing.

Grades, first that holds (GRADE_LIMITS): A = size CV < 2 %, CoM offset < 3 px, no clipped view;
B = CV < 5 %, offset < 8 px, clip rate < 0.5 %; C = CV < 10 %, offset < 20 px; D otherwise.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from facelift_lib.cameras import Cameras
from facelift_lib.io import CAMERA_FILE, image_paths

REFERENCE_SIZE = 512          # px scale of the reported sizes and offsets
NEAR_EMPTY_FRACTION = 0.001   # mask area below this fraction of the image: the view is (near-)empty
REPORT_FILE = "grading.json"
VIEWS_FILE = "grading_views.csv"


@dataclass(frozen=True)
class GradeLimits:
    """Upper limits of one grade: size_cv < size_cv, com_offset_px < com_offset_px, and clip_rate < clip_rate
    (clip_rate = 0 means no clipped view at all)."""

    size_cv: float
    com_offset_px: float
    clip_rate: float

    def holds(self, size_cv: float, com_offset_px: float, clip_rate: float) -> bool:
        clip_ok = clip_rate == 0 if self.clip_rate == 0 else clip_rate < self.clip_rate
        return size_cv < self.size_cv and com_offset_px < self.com_offset_px and clip_ok


GRADE_LIMITS: dict[str, GradeLimits] = {
    "A": GradeLimits(size_cv=0.02, com_offset_px=3.0, clip_rate=0.0),
    "B": GradeLimits(size_cv=0.05, com_offset_px=8.0, clip_rate=0.005),
    "C": GradeLimits(size_cv=0.10, com_offset_px=20.0, clip_rate=math.inf),
}


def grade_preprocessing(size_cv: float, com_offset_px: float, clip_rate: float) -> str:
    """'A'..'D' from the three dataset numbers (see the module docstring; NaN anywhere gives 'D')."""
    for grade, limits in GRADE_LIMITS.items():
        if limits.holds(size_cv, com_offset_px, clip_rate):
            return grade
    return "D"


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
        rows.append({
            "sample": sample_dir.name, "view": v, "camera": extras[v].get("raw_camera", str(v)), "method": method,
            "size_px": W, "area_px": area, "area_fraction": area / (H * W),
            "size_512": math.sqrt(area) * to512,
            "com_x": com[0], "com_y": com[1],
            "com_offset_512": math.hypot(com[0] - W / 2, com[1] - H / 2) * to512,
            "empty": area == 0, "near_empty": near_empty, "raw_near_empty": raw_near_empty,
            "clipped": clipped_edge or near_empty or raw_near_empty,
            "raw_border": bool(extras[v].get("raw_mask_touches_border", False)),
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
    size_cv, offset, clip_rate = _cv(ok["size_512"]), float(ok["com_offset_512"].mean()), float(views["clipped"].mean())
    methods = sorted({m for m in views["method"] if isinstance(m, str)})
    return {
        "method": methods[0] if len(methods) == 1 else methods,
        "n_samples": int(views["sample"].nunique()), "n_views": int(len(views)),
        "size_cv": size_cv, "com_offset_px": offset, "clip_rate": clip_rate,
        "grade": grade_preprocessing(size_cv, offset, clip_rate),
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
