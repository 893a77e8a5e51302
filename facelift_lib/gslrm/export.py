"""From predicted gaussians to files: filtered 3DGS PLY export and a turntable GIF.

Filters (FaceLift-like clean-up before export; every one is a parameter, None switches it off):
  min_opacity   drop nearly transparent gaussians (most background pixels end up here)
  max_scale     drop gaussians whose largest axis exceeds this (world units): smeared blobs
  crop_box      keep means inside an axis-aligned box ((xmin,ymin,zmin),(xmax,ymax,zmax))
  floater_k     drop statistical outliers: mean distance to the k nearest neighbours above
                median + floater_std * MAD-sigma of that distance over the kept set
Each filter reports how many gaussians it removed, so nothing disappears unexplained, and
`export_fidelity` renders what is kept against everything that was predicted, so the cost is a number.

FaceLift's own filters are a preset (`FACELIFT_PRESETS`, `FaceLiftFilters`): "facelift" = its inference.py,
"facelift_gradio" = its gradio_app.py. `export_ply(g, path, "facelift")` applies them and writes FaceLift's
PLY layout (`save_facelift_ply`), so a FaceLift user gets the PLY they expect.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cameras import FACELIFT_DISTANCE, orbit_cameras
from ..gaussians import SH_C0, Gaussians, save_ply
from ..metrics import image_metrics, render_views
from ..render import render_gaussians


@dataclass
class ExportFilters:
    # 0.001: on the smoke model the ~23,000 gaussians below it (background pixels) change no render, while
    # 0.05 kept 128 of ~700 visible ones and cost 8 dB against the full prediction (export_fidelity, notebook 05)
    min_opacity: float | None = 0.001
    max_scale: float | None = 0.3
    crop_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = ((-1.8,) * 3, (1.8,) * 3)
    floater_k: int | None = 8
    floater_std: float = 4.0


@dataclass(frozen=True)
class FaceLiftFilters:
    """FaceLift's PLY filters, each an independent per-gaussian rule on the activated gaussians:
    keep opacity > min_opacity; drop max(scale) >= max_scale unless z > 0; drop floaters with
    |x| > floater and |y| > floater and z < -floater; keep x, y in [-box_xy, box_xy] and z in
    [-box_z, box_z] (bounds inclusive). No near/far pruning, no outlier statistics."""

    min_opacity: float = 0.04
    max_scale: float = 0.1
    floater: float = 0.6
    box_xy: float = 0.91
    box_z: float = 1.0


# FaceLift @ 0a9420c: inference.py, and gradio_app.py (scale 0.2, floater 0.75, same opacity and box)
FACELIFT_PRESETS = {"facelift": FaceLiftFilters(), "facelift_gradio": FaceLiftFilters(max_scale=0.2, floater=0.75)}
Filters = ExportFilters | FaceLiftFilters | str | None


def resolve_filters(filters: Filters) -> ExportFilters | FaceLiftFilters:
    """None -> ExportFilters(); a preset name ("facelift", "facelift_gradio") -> its FaceLiftFilters."""
    if filters is None:
        return ExportFilters()
    if isinstance(filters, str):
        if filters not in FACELIFT_PRESETS:
            raise ValueError(f"unknown export filter preset {filters!r}; presets: {sorted(FACELIFT_PRESETS)}")
        return FACELIFT_PRESETS[filters]
    return filters


def facelift_removals(g: Gaussians, f: FaceLiftFilters) -> dict[str, torch.Tensor]:
    """{rule: [N] bool, True where FaceLift's rule removes the gaussian} for unbatched gaussians."""
    x, y, z = g.means.unbind(-1)
    return {
        "opacity": ~(g.opacities > f.min_opacity),
        "scale": (g.scales.max(-1).values >= f.max_scale) & ~(z > 0),
        "floaters": (x.abs() > f.floater) & (y.abs() > f.floater) & (z < -f.floater),
        "box": ~((x.abs() <= f.box_xy) & (y.abs() <= f.box_xy) & (z.abs() <= f.box_z)),
    }


def filter_gaussians(g: Gaussians, filters: Filters = None) -> tuple[Gaussians, dict[str, int]]:
    """Apply the filters in order to unbatched gaussians -> (kept, {filter: removed count, 'kept': n}).

    filters: ExportFilters (ours), FaceLiftFilters or a preset name (FaceLift's rules, see FACELIFT_PRESETS).
    """
    f = resolve_filters(filters)
    if g.means.ndim != 2:
        raise ValueError(f"filter_gaussians: unbatched gaussians [N,...] expected, got means {list(g.means.shape)}")
    g = g.detach().to("cpu")
    if isinstance(f, FaceLiftFilters):
        report: dict[str, int] = {"input": len(g)}
        keep = torch.ones(len(g), dtype=torch.bool)
        for rule, removed in facelift_removals(g, f).items():  # independent rules: the order only splits counts
            report[rule], keep = int((keep & removed).sum()), keep & ~removed
        report["kept"] = int(keep.sum())
        return g.select(keep), report
    report = {"input": len(g)}
    keep = torch.isfinite(torch.cat([g.means, g.scales, g.colors, g.quats, g.opacities[:, None]], 1)).all(1)
    report["nonfinite"] = int((~keep).sum())
    if f.min_opacity is not None:
        bad = keep & (g.opacities < f.min_opacity)
        report["min_opacity"], keep = int(bad.sum()), keep & ~bad
    if f.max_scale is not None:
        bad = keep & (g.scales.max(-1).values > f.max_scale)
        report["max_scale"], keep = int(bad.sum()), keep & ~bad
    if f.crop_box is not None:
        lo, hi = torch.tensor(f.crop_box[0]), torch.tensor(f.crop_box[1])
        bad = keep & ~((g.means >= lo) & (g.means <= hi)).all(-1)
        report["crop_box"], keep = int(bad.sum()), keep & ~bad
    if f.floater_k is not None and int(keep.sum()) > f.floater_k + 1:
        from scipy.spatial import cKDTree

        idx = keep.nonzero()[:, 0]
        pts = g.means[idx].double().numpy()
        dist, _ = cKDTree(pts).query(pts, k=f.floater_k + 1)
        mean_d = dist[:, 1:].mean(1)
        med = np.median(mean_d)
        sigma = 1.4826 * np.median(np.abs(mean_d - med))
        out = torch.from_numpy(mean_d > med + f.floater_std * max(sigma, 1e-12))
        report["floaters"] = int(out.sum())
        keep[idx[out]] = False
    report["kept"] = int(keep.sum())
    return g.select(keep), report


def save_facelift_ply(g: Gaussians, path: str | Path) -> Path:
    """Unbatched gaussians -> a PLY in FaceLift's layout: x, y, z, f_dc_0..2, 45 zero f_rest_*, opacity as a
    logit, log scales, rot_0..3 (wxyz), and uint8 red/green/blue = trunc(clip(colour * 255, 0, 255)).

    One departure: FaceLift stores its raw, unnormalised quaternion; our gaussians carry the normalised one
    (the same rotation for every 3DGS reader). Opacities are clipped to [1e-6, 1 - 1e-6] so the logit is finite.
    """
    from plyfile import PlyData, PlyElement

    path = Path(path)
    d = g.detach().to(device="cpu", dtype=torch.float64)
    o = d.opacities.clamp(1e-6, 1 - 1e-6)
    floats = {"x": d.means[:, 0], "y": d.means[:, 1], "z": d.means[:, 2]}
    floats.update({f"f_dc_{i}": (d.colors[:, i] - 0.5) / SH_C0 for i in range(3)})
    floats.update({f"f_rest_{i}": torch.zeros(len(d), dtype=torch.float64) for i in range(45)})
    floats["opacity"] = torch.log(o / (1 - o))
    floats.update({f"scale_{i}": torch.log(d.scales[:, i]) for i in range(3)})
    floats.update({f"rot_{i}": d.quats[:, i] for i in range(4)})
    rgb = (d.colors * 255).clamp(0, 255).floor().to(torch.uint8)
    vertex = np.empty(len(d), dtype=[(k, "<f4") for k in floats] + [(c, "u1") for c in ("red", "green", "blue")])
    for k, v in floats.items():
        vertex[k] = v.float().numpy()
    for i, c in enumerate(("red", "green", "blue")):
        vertex[c] = rgb[:, i].numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(str(tmp))
    tmp.replace(path)
    return path


def export_ply(g: Gaussians, path: str | Path, filters: Filters = None) -> tuple[Path, dict[str, int]]:
    """Filter unbatched gaussians and write a 3DGS PLY -> (path, filter report).

    ExportFilters (default): our filters, standard 3DGS PLY (`gaussians.save_ply`). A FaceLift preset
    ("facelift", "facelift_gradio" or a FaceLiftFilters): FaceLift's filters and PLY layout (`save_facelift_ply`).
    """
    f = resolve_filters(filters)
    kept, report = filter_gaussians(g, f)
    if len(kept) == 0:
        raise ValueError(f"export_ply({path}): the filters removed every gaussian ({report}); relax them")
    return (save_facelift_ply(kept, path) if isinstance(f, FaceLiftFilters) else save_ply(kept, path)), report


@torch.no_grad()
def export_fidelity(predicted: Gaussians, kept: Gaussians, K: torch.Tensor, w2c: torch.Tensor, size: int,
                    background: torch.Tensor | None = None) -> dict[str, float]:
    """What the export filters cost, as a picture would show it: the kept gaussians rendered through cameras
    K [C,3,3] / w2c [C,4,4] at size² against all predicted gaussians through the same cameras.

    Returns the mean labelled metrics (`metrics.image_metrics`; 'masked' = inside the full render's alpha
    > 0.5): identical sets give psnr inf and mask_iou 1.
    """
    bg = torch.ones(3) if background is None else background
    ref_rgb, ref_alpha = render_views(predicted.detach().to(torch.float32), K, w2c, size, bg)
    rgb, alpha = render_views(kept.detach().to(torch.float32), K, w2c, size, bg)
    m = image_metrics(rgb, alpha, ref_rgb, (ref_alpha > 0.5).float())
    return {k: float(v.mean()) for k, v in m.items()}


@torch.no_grad()
def turntable_frames(g: Gaussians, n_frames: int = 36, elevation_deg: float = 20.0,
                     distance: float = FACELIFT_DISTANCE, size: int = 128, fx_512: float = 548.99,
                     background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Render unbatched gaussians from a full orbit around the origin -> uint8 frames [T,size,size,3]."""
    cams = orbit_cameras(np.linspace(0.0, 360.0, n_frames, endpoint=False).tolist(), elevation_deg,
                         distance=distance, fx=fx_512 * size / 512, width=size)
    rgb, _, _ = render_gaussians(g.detach().to("cpu", torch.float32), cams, torch.tensor(background))
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def save_turntable_gif(g: Gaussians, path: str | Path, fps: int = 12, **kwargs) -> Path:
    """Write `turntable_frames` as a looping GIF (imageio) -> path."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, turntable_frames(g, **kwargs), duration=1000 / fps, loop=0)
    return path
