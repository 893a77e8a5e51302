"""Behaviour readouts from a mouse's 3D gaussians, per frame, in rig millimetres and degrees.

One frame's gaussians (centres in rig mm, world Z up, floor at z = 0) -> `frame_readouts`:
  centroid_{x,y,z}_mm   opacity-weighted mean of the centres
  heading_deg           body axis in the floor plane: the main axis of the opacity-weighted covariance of the
                        centres' (x, y); its sign points away from the tail, i.e. against the skew of the
                        centres along the axis (the tail is a long thin extension on one side). 0° = +x, 90° = +y.
  length_mm             extent along that axis between the `length_quantiles` of the projections
  height_mm             `height_quantile` of the centres' z: how high the mouse reaches above the floor (rearing)

A sequence of readouts (a DataFrame, one row per frame) -> `fix_heading_sign` (the sign from the direction of
travel, `heading_from_motion`, or by temporal continuity, `heading_continuity`, instead of per frame),
`readout_errors` against the same readouts of the true gaussians, `jitter` (frame-to-frame steps against the
true motion), `smooth_readouts` (Savitzky-Golay, parameterised), `circular_std_deg` (how much the heading
varies) and `cloud_step` (how far the whole cloud moves between frames). Pure numpy/torch: nothing here reads files.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

READOUT_COLUMNS = ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "heading_deg", "length_mm", "height_mm")
CENTROID = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]


@dataclass(frozen=True)
class ReadoutConfig:
    """min_opacity: gaussians fainter than this are left out (GS-LRM puts most background pixels there).
    length_quantiles / height_quantile: robust extents (a few floaters must not set the body length)."""

    min_opacity: float = 0.05
    length_quantiles: tuple[float, float] = (0.02, 0.98)
    height_quantile: float = 0.98


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(np.interp(q * cw[-1], cw, x[order]))


def frame_readouts(means_mm: torch.Tensor | np.ndarray, opacities: torch.Tensor | np.ndarray,
                   cfg: ReadoutConfig | None = None) -> dict[str, float]:
    """Centres [N,3] (rig mm, Z up, floor z = 0) and opacities [N] of one frame -> the readouts of the module doc
    (plus n_used, the gaussians at or above min_opacity). NaN readouts when fewer than 3 gaussians are left."""
    cfg = cfg or ReadoutConfig()
    m = np.asarray(means_mm, dtype=np.float64).reshape(-1, 3)
    w = np.asarray(opacities, dtype=np.float64).reshape(-1)
    keep = np.isfinite(m).all(1) & (w >= cfg.min_opacity)
    m, w = m[keep], w[keep]
    if len(m) < 3:
        return {**{k: float("nan") for k in READOUT_COLUMNS}, "n_used": int(len(m))}
    c = (w[:, None] * m).sum(0) / w.sum()
    xy = m[:, :2] - c[:2]
    cov = (w[:, None, None] * xy[:, :, None] * xy[:, None, :]).sum(0) / w.sum()
    _, vecs = np.linalg.eigh(cov)
    axis = vecs[:, 1]
    p = xy @ axis
    skew = float((w * p ** 3).sum() / w.sum())
    head = -axis if skew > 0 else axis  # the tail side carries the positive skew
    lo, hi = (_weighted_quantile(p, w, q) for q in cfg.length_quantiles)
    return {"centroid_x_mm": float(c[0]), "centroid_y_mm": float(c[1]), "centroid_z_mm": float(c[2]),
            "heading_deg": float(np.degrees(np.arctan2(head[1], head[0]))), "length_mm": hi - lo,
            "height_mm": _weighted_quantile(m[:, 2], w, cfg.height_quantile), "n_used": int(len(m))}


def angle_diff_deg(a: np.ndarray | pd.Series | float, b: np.ndarray | pd.Series | float) -> np.ndarray:
    """a - b wrapped to [-180, 180) degrees."""
    return (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) + 180.0) % 360.0 - 180.0


def heading_continuity(heading_deg: np.ndarray | pd.Series) -> np.ndarray:
    """Headings [T] (degrees) with the sign fixed by temporal continuity: the first frame keeps its sign (from
    the head/tail asymmetry), every later one is turned by 180° when that brings it within 90° of the frame
    before. NaN frames are passed through and do not break the chain."""
    h = np.asarray(heading_deg, dtype=np.float64).copy()
    prev = np.nan
    for t in range(len(h)):
        if np.isnan(h[t]):
            continue
        if not np.isnan(prev) and abs(angle_diff_deg(h[t], prev)) > 90.0:
            h[t] = float(angle_diff_deg(h[t] + 180.0, 0.0))
        prev = h[t]
    return h


def heading_from_motion(df: pd.DataFrame, min_step_mm: float = 1.0, half_window: int = 2,
                        max_turn_deg: float = 45.0) -> np.ndarray:
    """Headings [T] whose sign follows the direction of travel (mice walk forward), robust to a weak tail.

    The sign is first made continuous (`heading_continuity`); the sequence is cut into segments wherever the
    heading then still jumps by more than max_turn_deg between frames (an unreliable axis, where continuity
    may have chosen wrong); each segment is turned by 180° as a whole when its frames point against the
    direction of travel, i.e. when the sum over its moving frames (centroid central-difference velocity over
    +-half_window frames of at least min_step_mm per frame in the floor plane) of speed x cos(heading - travel)
    is negative. Segments without a moving frame keep their sign. Unlike the asymmetry sign of `frame_readouts`,
    this does not need the tail to be reconstructed."""
    h = heading_continuity(df["heading_deg"])
    xy = df[CENTROID[:2]].to_numpy(dtype=np.float64)
    T, k = len(h), max(1, int(half_window))
    vote = np.zeros(T)
    for t in range(T):
        a, b = max(0, t - k), min(T - 1, t + k)
        v = (xy[b] - xy[a]) / max(b - a, 1)
        speed = float(np.hypot(*v)) if np.isfinite(v).all() else 0.0
        if speed >= min_step_mm and not np.isnan(h[t]):
            vote[t] = speed * np.cos(np.radians(h[t]) - np.arctan2(v[1], v[0]))
    steps = np.abs(angle_diff_deg(h[1:], h[:-1]))
    cuts = [0] + [t + 1 for t in np.flatnonzero(np.nan_to_num(steps) > max_turn_deg)] + [T]
    for a, b in zip(cuts[:-1], cuts[1:]):
        if vote[a:b].sum() < 0:
            h[a:b] = angle_diff_deg(h[a:b] + 180.0, 0.0)
    return h


HEADING_SIGNS = ("motion", "continuity", "asymmetry")


def fix_heading_sign(df: pd.DataFrame, how: str = "motion", **kw) -> pd.DataFrame:
    """A copy of readouts with heading_deg's sign chosen by `how`: "motion" (`heading_from_motion`, kw passed on),
    "continuity" (`heading_continuity`), "asymmetry" (per frame, as `frame_readouts` gives it)."""
    if how not in HEADING_SIGNS:
        raise ValueError(f"fix_heading_sign: how must be one of {HEADING_SIGNS}, got {how!r}")
    out = df.copy()
    if how == "motion":
        out["heading_deg"] = heading_from_motion(df, **kw)
    elif how == "continuity":
        out["heading_deg"] = heading_continuity(df["heading_deg"])
    return out


def circular_std_deg(heading_deg: np.ndarray | pd.Series) -> float:
    """Circular standard deviation of headings (degrees), sqrt(-2 ln R) with R the mean resultant length: how much
    a heading varies over a sequence (0 = constant; a full turn at constant speed gives ~inf, large values)."""
    h = np.radians(np.asarray(heading_deg, dtype=np.float64))
    h = h[np.isfinite(h)]
    R = float(np.hypot(np.cos(h).mean(), np.sin(h).mean())) if len(h) else float("nan")
    return float(np.degrees(np.sqrt(-2.0 * np.log(max(R, 1e-12)))))


def readout_errors(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per frame, pred vs truth (same columns, same row order): centroid_err_mm (3D distance), centroid_xy_err_mm,
    heading_err_deg (absolute, wrapped), length_err_mm and height_err_mm (signed, pred - truth)."""
    if len(pred) != len(truth):
        raise ValueError(f"readout_errors: {len(pred)} predicted frames but {len(truth)} true ones")
    d = pred[CENTROID].to_numpy() - truth[CENTROID].to_numpy()
    return pd.DataFrame({"centroid_err_mm": np.linalg.norm(d, axis=1),
                         "centroid_xy_err_mm": np.linalg.norm(d[:, :2], axis=1),
                         "heading_err_deg": np.abs(angle_diff_deg(pred["heading_deg"], truth["heading_deg"])),
                         "length_err_mm": pred["length_mm"].to_numpy() - truth["length_mm"].to_numpy(),
                         "height_err_mm": pred["height_mm"].to_numpy() - truth["height_mm"].to_numpy()},
                        index=pred.index)


def jitter(pred: pd.DataFrame, truth: pd.DataFrame | None = None) -> dict[str, float]:
    """Frame-to-frame stability of a readout sequence (consecutive rows = consecutive frames).

    With truth: the RMS over frame pairs of (pred step - true step), i.e. how much the readout moves that the
    mouse did not: centroid_jitter_mm (3D steps), heading_jitter_deg, length_jitter_mm, height_jitter_mm.
    Steps are taken between consecutive frames only (an integer frame index with a gap, e.g. a skipped frame,
    drops the step across it). Without truth (a real rig): the RMS second difference (frame-to-frame acceleration) under the same names
    with the suffix _acc; it mixes jitter with real accelerations, so it is an upper bound, not the jitter.
    """
    def steps(df: pd.DataFrame) -> dict[str, np.ndarray]:
        return {"centroid": np.diff(df[CENTROID].to_numpy(), axis=0),
                "heading": angle_diff_deg(df["heading_deg"].to_numpy()[1:], df["heading_deg"].to_numpy()[:-1]),
                "length": np.diff(df["length_mm"].to_numpy()), "height": np.diff(df["height_mm"].to_numpy())}

    idx = np.asarray(pred.index)  # frame numbers: steps across a gap (skipped frames) are not frame-to-frame
    consecutive = np.diff(idx) == 1 if np.issubdtype(idx.dtype, np.integer) else np.ones(max(len(idx) - 1, 0), bool)

    def rms(x: np.ndarray) -> float:
        x = x.reshape(len(x), -1)
        return float(np.sqrt(np.nanmean((x ** 2).sum(1)))) if len(x) else float("nan")

    units = {"centroid": "mm", "heading": "deg", "length": "mm", "height": "mm"}
    sp = steps(pred)
    if truth is not None:
        st = steps(truth)
        return {f"{k}_jitter_{units[k]}": rms((sp[k] - st[k])[consecutive]) for k in sp}
    both = consecutive[1:] & consecutive[:-1]
    return {f"{k}_jitter_{units[k]}_acc": rms(np.diff(v, axis=0)[both]) for k, v in sp.items()}


def smooth_readouts(df: pd.DataFrame, window: int = 7, polyorder: int = 2) -> pd.DataFrame:
    """Savitzky-Golay filter (scipy.signal.savgol_filter, mode 'interp') over frames of every readout column; the
    heading is unwrapped first and wrapped back. A window longer than the sequence is cut to the longest odd
    window that fits (and must stay > polyorder)."""
    from scipy.signal import savgol_filter

    n = len(df)
    window = min(window, n if n % 2 else n - 1)
    if window <= polyorder:
        raise ValueError(f"smooth_readouts: window {window} (for {n} frames) must exceed polyorder {polyorder}")
    out = df.copy()
    for col in READOUT_COLUMNS:
        x = df[col].to_numpy(dtype=np.float64)
        if col == "heading_deg":
            x = np.degrees(np.unwrap(np.radians(x)))
        y = savgol_filter(x, window, polyorder, mode="interp")
        out[col] = angle_diff_deg(y, 0.0) if col == "heading_deg" else y
    return out


def _nearest_mean(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> float:
    """Mean distance from each point of a [N,3] to its nearest point of b [M,3] (chunked: bounded memory)."""
    d = [torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
         for i in range(0, len(a), chunk)]
    return float(torch.cat(d).mean())


def cloud_step(a: torch.Tensor, b: torch.Tensor) -> float:
    """Symmetric mean nearest-neighbour distance (chamfer) between two point sets [N,3] and [M,3], in their units:
    how far a gaussian cloud moved between two frames."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return 0.5 * (_nearest_mean(a, b) + _nearest_mean(b, a))
