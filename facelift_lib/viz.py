"""Figure helpers the notebooks share: image grids with mask outlines, camera frustums, loss curves,
and an optional ipywidgets browser. Static figures are matplotlib (they show in the executed notebook
and its HTML); plotly and ipywidgets are for interactive exploration only.

Notebook-only module: the library never imports it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from facelift_lib.cameras import Cameras, pixel_rays

MASK_COLOR = "lime"
MARK_COLOR = "red"


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --- images -------------------------------------------------------------------------------------
def image_grid(images: Any, masks: Any = None, titles: Sequence[str] | None = None, marks: Any = None,
               ncols: int = 6, size: float = 2.2, suptitle: str | None = None) -> Figure:
    """A grid of V images [V,C,H,W] (C = 1, 3 or 4; alpha is dropped) in [0,1].

    masks [V,H,W] or [V,1,H,W]: outlined (contour at 0.5), not filled, so the image stays readable.
    marks: per view an (x, y) pixel point or [K,2] points (e.g. the mask's centre of mass).
    """
    imgs = _numpy(images)
    V = imgs.shape[0]
    ncols = max(1, min(ncols, V))
    nrows = math.ceil(V / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * imgs.shape[2] / imgs.shape[3]),
                             squeeze=False)
    m = None if masks is None else _numpy(masks).reshape(V, imgs.shape[2], imgs.shape[3])
    for v, ax in enumerate(axes.flat):
        ax.axis("off")
        if v >= V:
            continue
        img = imgs[v, :3].transpose(1, 2, 0) if imgs.shape[1] >= 3 else imgs[v, 0]
        ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        if m is not None and m[v].max() > 0.5:
            ax.contour(m[v].astype(float), levels=[0.5], colors=MASK_COLOR, linewidths=0.8)
        if marks is not None:
            pts = _numpy(marks[v]).reshape(-1, 2)
            ax.scatter(pts[:, 0], pts[:, 1], marker="+", s=60, c=MARK_COLOR, linewidths=1.2)
        if titles is not None:
            ax.set_title(str(titles[v]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


# --- cameras ------------------------------------------------------------------------------------
def frustum_segments(cams: Cameras, depth: float) -> np.ndarray:
    """Line segments [V,9,2,3] of each camera's frustum at `depth` world units.

    4 edges centre→image corner, the 4 sides of the image rectangle, and one tick from the
    centre of the image's top edge pointing "up" in the image (-y), so roll is visible.
    """
    W, H = cams.width, cams.height
    uv = torch.tensor([[0, 0], [W, 0], [W, H], [0, H], [W / 2, 0], [W / 2, -0.15 * H]], dtype=torch.float64)
    x = (uv[None, :, 0] - cams.cx[:, None]) / cams.fx[:, None]
    y = (uv[None, :, 1] - cams.cy[:, None]) / cams.fy[:, None]
    pts_cam = torch.stack([x, y, torch.ones_like(x)], -1) * depth                       # [V,6,3]
    c2w = cams.c2w
    pts = pts_cam @ c2w[:, :3, :3].transpose(1, 2) + c2w[:, None, :3, 3]               # [V,6,3]
    o = c2w[:, None, :3, 3].expand(-1, 4, -1)
    corners = pts[:, :4]
    segs = [torch.stack([o, corners], 2),                                              # [V,4,2,3]
            torch.stack([corners, corners.roll(-1, 1)], 2),                              # rectangle
            torch.stack([pts[:, 4], pts[:, 5]], 1)[:, None]]                             # up tick
    return torch.cat(segs, 1).numpy()


def _default_depth(cams: Cameras, points: np.ndarray | None) -> float:
    """Frustum depth: 15 % of the median camera distance to the scene centre (the points' mean, else the origin)."""
    centre = points.mean(0) if points is not None and len(points) else np.zeros(3)
    return 0.15 * float(np.median(np.linalg.norm(cams.centers.numpy() - centre, axis=1)))


def _subsample(points: Any, colors: Any, max_points: int, seed: int = 0) -> tuple[np.ndarray | None, Any]:
    if points is None:
        return None, None
    pts = _numpy(points).reshape(-1, 3)
    if len(pts) <= max_points:
        return pts, None if colors is None else _numpy(colors)
    keep = np.random.default_rng(seed).choice(len(pts), max_points, replace=False)
    return pts[keep], None if colors is None else _numpy(colors)[keep]


def _names(cams: Cameras) -> list[str]:
    return list(cams.names) if cams.names else [str(i) for i in range(len(cams))]


def ray_segments(cams: Cameras, rays_per_side: int, length: float | Sequence[float]) -> np.ndarray:
    """Line segments [V,R,2,3] (R = rays_per_side²): each camera's centre to `length` world units along the
    rays through a rays_per_side x rays_per_side grid of pixel centres spread over its image
    (`cameras.pixel_rays` at that resolution). length: one value, or one per camera [V]."""
    if rays_per_side < 1:
        raise ValueError(f"ray_segments: rays_per_side must be >= 1, got {rays_per_side}")
    origins, dirs = pixel_rays(cams, height=rays_per_side, width=rays_per_side, dtype=torch.float64)  # [V,n,n,3]
    V = len(cams)
    o, d = origins.reshape(V, -1, 3).numpy(), dirs.reshape(V, -1, 3).numpy()
    lengths = np.broadcast_to(np.asarray(length, dtype=np.float64), (V,))[:, None, None]
    return np.stack([o, o + d * lengths], axis=2)


def _polyline(segments: np.ndarray) -> np.ndarray:
    """Segments [..., 2, 3] as one [K,3] polyline with NaN rows between them (one plotly trace)."""
    seg = segments.reshape(-1, 2, 3)
    return np.concatenate([seg, np.full((len(seg), 1, 3), np.nan)], axis=1).reshape(-1, 3)


def plot_cameras_3d(cams: Cameras, points: Any = None, colors: Any = None, depth: float | None = None,
                    max_points: int = 3000, title: str | None = None, rays_per_side: int = 0,
                    ray_length: float | None = None, reference: Cameras | None = None,
                    reference_name: str = "reference cameras") -> Any:
    """Interactive plotly figure: camera frustums (with names) and an optional point cloud [N,3], Z up.

    colors: [N,3] in [0,1] per point. Point clouds are subsampled to `max_points` (seeded) to keep the
    notebook small. rays_per_side > 0 adds each camera's rays through a grid of its pixels (in the camera's
    colour; toggled with it in the legend), `ray_length` long (default: 1.15 x the camera's distance to the
    scene centre, so the rays cross the subject). reference: other cameras drawn as grey frustums under
    `reference_name` (e.g. FaceLift's standard views beside a rig normalised to FaceLift units).
    """
    import plotly.colors
    import plotly.graph_objects as go

    pts, cols = _subsample(points, colors, max_points)
    depth = depth or _default_depth(cams, pts)
    segs = frustum_segments(cams, depth)
    palette = plotly.colors.qualitative.Plotly
    fig = go.Figure()
    for i, (name, seg) in enumerate(zip(_names(cams), segs)):
        xyz = _polyline(seg)  # NaN breaks the line
        fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name=name, legendgroup=name,
                                   line=dict(width=3, color=palette[i % len(palette)])))
    c = cams.centers.numpy()
    fig.add_trace(go.Scatter3d(x=c[:, 0], y=c[:, 1], z=c[:, 2], mode="text", text=_names(cams),
                               showlegend=False))
    if rays_per_side > 0:
        centre = pts.mean(0) if pts is not None and len(pts) else np.zeros(3)
        length = ray_length if ray_length is not None else 1.15 * np.linalg.norm(c - centre, axis=1)
        for i, (name, rays) in enumerate(zip(_names(cams), ray_segments(cams, rays_per_side, length))):
            xyz = _polyline(rays)
            fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name=f"{name} rays",
                                       legendgroup=name, showlegend=False, opacity=0.5,
                                       line=dict(width=1, color=palette[i % len(palette)])))
    if reference is not None:
        xyz = _polyline(frustum_segments(reference, depth))
        fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name=reference_name,
                                   line=dict(width=2, color="gray", dash="dash")))
    if pts is not None:
        marker = dict(size=1.5)
        if cols is not None:
            marker["color"] = [f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in np.clip(cols, 0, 1) * 255]
        fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", marker=marker,
                                   name="points"))
    fig.update_layout(scene=dict(aspectmode="data", camera=dict(up=dict(x=0, y=0, z=1)),
                                 xaxis_title="x", yaxis_title="y", zaxis_title="z"),
                      title=title, margin=dict(l=0, r=0, t=30 if title else 0, b=0), height=500)
    return fig


def plot_camera_frustums_mpl(cams: Cameras, points: Any = None, colors: Any = None, depth: float | None = None,
                             max_points: int = 3000, ax: Any = None, title: str | None = None,
                             elev: float = 25.0, azim: float = -60.0) -> Figure:
    """Static matplotlib version of plot_cameras_3d (Z up, equal axes)."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    pts, cols = _subsample(points, colors, max_points)
    depth = depth or _default_depth(cams, pts)
    segs = frustum_segments(cams, depth)
    if ax is None:
        fig = plt.figure(figsize=(7, 6))
        ax = fig.add_subplot(projection="3d")
    fig = ax.figure
    palette = plt.get_cmap("tab10")
    for i, (name, seg) in enumerate(zip(_names(cams), segs)):
        ax.add_collection3d(Line3DCollection(seg, colors=[palette(i % 10)], linewidths=1.0))
        ax.text(*seg[0, 0], name, fontsize=7, color=palette(i % 10))
    ax.scatter([0], [0], [0], marker="+", s=40, c="black")  # the world origin, for scale and orientation
    everything = np.concatenate([segs.reshape(-1, 3), np.zeros((1, 3))])
    if pts is not None:
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=0.5, c=cols if cols is not None else "0.3", depthshade=False)
        everything = np.concatenate([everything, pts])
    # Equal scale on all axes, but no axis shorter than 40 % of the longest: a ring of cameras at one
    # height would otherwise collapse into a flat slab.
    lo, hi = everything.min(0), everything.max(0)
    half = np.maximum((hi - lo) / 2, 0.2 * (hi - lo).max())
    mid = (hi + lo) / 2
    ax.set_xlim(mid[0] - half[0], mid[0] + half[0])
    ax.set_ylim(mid[1] - half[1], mid[1] + half[1])
    ax.set_zlim(mid[2] - half[2], mid[2] + half[2])
    ax.set_box_aspect(half)
    ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_zlabel("z")
    ax.view_init(elev=elev, azim=azim)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_camera_distributions(cams: Mapping[str, Cameras],
                              targets: Mapping[str, Sequence[float]] | None = None) -> Figure:
    """Side-by-side distributions of camera sets (e.g. FaceLift vs a mouse rig), scale-free so mm and
    FaceLift units compare: azimuth/elevation, distance / mean distance, horizontal FoV, fy/fx,
    principal-point offset (fraction of the image) and roll. `targets`: the point each set looks at."""
    from facelift_lib.camera_report import describe

    targets = targets or {}
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    (ax_ae, ax_d, ax_fov), (ax_asp, ax_pp, ax_roll) = axes
    markers = "osD^vP*X"
    for i, (label, c) in enumerate(cams.items()):
        df = describe(c, targets.get(label, (0.0, 0.0, 0.0)))
        kw = dict(marker=markers[i % len(markers)], alpha=0.75, label=f"{label} ({len(c)})")
        jitter = np.full(len(df), i) + np.linspace(-0.15, 0.15, len(df))
        ax_ae.scatter(df["azimuth_deg"], df["elevation_deg"], **kw)
        ax_d.scatter(jitter, df["distance"] / df["distance"].mean(), **kw)
        ax_fov.scatter(jitter, df["hfov_deg"], **kw)
        ax_asp.scatter(jitter, df["fy_over_fx"], **kw)
        ax_pp.scatter(df["pp_dx_px"] / c.width, df["pp_dy_px"] / c.height, **kw)
        ax_roll.scatter(jitter, df["roll_deg"], **kw)
    ax_ae.set(xlabel="azimuth (deg)", ylabel="elevation (deg)", xlim=(-5, 365), xticks=range(0, 361, 60))
    ax_pp.set(xlabel="cx offset / W", ylabel="cy offset / H")
    ax_pp.axhline(0, color="0.7", lw=0.5), ax_pp.axvline(0, color="0.7", lw=0.5)
    names = list(cams)
    for ax, ylabel in [(ax_d, "distance / mean distance"), (ax_fov, "horizontal FoV (deg)"),
                       (ax_asp, "fy / fx"), (ax_roll, "roll (deg)")]:
        ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
        ax.set_ylabel(ylabel)
    for ax, span in [(ax_d, 0.1), (ax_fov, 5.0), (ax_asp, 0.01), (ax_roll, 2.0)]:
        _min_span(ax, span)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    ax_ae.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _min_span(ax: Any, span: float) -> None:
    """Widen the y axis to at least `span` around its centre (so float noise is not drawn as spread)."""
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = (hi + lo) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def plot_ray_distributions(cams: Mapping[str, Cameras], size: int = 16) -> Figure:
    """Per camera set, the pixel rays' directions (azimuth/elevation of d) and the distance of each
    ray's line from the world origin (|o × d|, the Plücker moment's norm). Sets must share units
    (FaceLift units: normalise a rig first); each image is resampled to size x size rays."""
    from facelift_lib.cameras import pixel_rays

    fig, (ax_dir, ax_m) = plt.subplots(1, 2, figsize=(12, 4))
    for label, c in cams.items():
        o, d = pixel_rays(c, size, size, dtype=torch.float64)
        d, o = d.reshape(-1, 3), o.reshape(-1, 3)
        az = np.degrees(np.arctan2(d[:, 1].numpy(), d[:, 0].numpy())) % 360
        el = np.degrees(np.arcsin(d[:, 2].clamp(-1, 1).numpy()))
        ax_dir.scatter(az, el, s=2, alpha=0.4, label=label)
        ax_m.hist(torch.linalg.cross(o, d).norm(dim=-1).numpy(), bins=25, histtype="step", density=True,
                  label=label)
    ax_dir.set(xlabel="ray direction azimuth (deg)", ylabel="ray direction elevation (deg)", xlim=(0, 360),
               xticks=range(0, 361, 60))
    ax_m.set(xlabel="|o × d|: ray distance from the world origin", ylabel="density")
    for ax in (ax_dir, ax_m):
        ax.grid(alpha=0.3), ax.legend(fontsize=8, markerscale=4)
    fig.tight_layout()
    return fig


def plot_point_clouds(clouds: Mapping[str, Any], max_points: int = 4000, title: str | None = None,
                      size: float = 3.4) -> Figure:
    """3D point sets {label: points [N,3]} (Z-up world) seen from the top (x-y), the side (x-z) and the
    front (y-z), overlaid in one colour each with equal axes: where a reconstruction is off shows at a glance."""
    views = (("top (x, y)", 0, 1), ("side (x, z)", 0, 2), ("front (y, z)", 1, 2))
    fig, axes = plt.subplots(1, 3, figsize=(3 * size, size))
    for n, (label, pts) in enumerate(clouds.items()):
        xyz, _ = _subsample(pts, None, max_points, seed=n)
        for ax, (name, i, j) in zip(axes, views):
            ax.scatter(xyz[:, i], xyz[:, j], s=2, alpha=0.5, color=f"C{n}", label=label if ax is axes[0] else None)
            ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
    axes[0].legend(loc="lower left", fontsize=7, markerscale=4)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_matrix(values: Any, row_names: Sequence[str], col_names: Sequence[str], title: str | None = None,
                fmt: str = "{:.2f}", cmap: str = "viridis") -> Figure:
    """A small annotated heatmap [R,C] (e.g. ray distance of each rig view to each standard view)."""
    m = _numpy(values)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * m.shape[1], 0.8 + 0.45 * m.shape[0]))
    im = ax.imshow(m, cmap=cmap)
    ax.set_xticks(range(m.shape[1]), col_names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(m.shape[0]), row_names, fontsize=8)
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7,
                color="white" if v < (m.min() + m.max()) / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- curves -------------------------------------------------------------------------------------
def plot_curves(data: Any, x: str, ys: str | Sequence[str], marks: Sequence[float] | Mapping[str, Sequence[float]]
                | None = None, logy: bool = False, ax: Any = None, title: str | None = None) -> Figure:
    """Curves ys against x from a DataFrame or a dict of sequences (e.g. loss vs step).

    marks: x positions to flag (e.g. steps skipped for a non-finite loss), drawn as thin vertical
    lines; a dict gives each group its own label. NaN values are simply gaps in the curve.
    """
    import pandas as pd

    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
    ys = [ys] if isinstance(ys, str) else list(ys)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    fig = ax.figure
    for y in ys:
        ax.plot(df[x], df[y], label=y, linewidth=1.2)
    groups = marks if isinstance(marks, Mapping) else {"marked": marks} if marks is not None else {}
    for (label, xs), color in zip(groups.items(), ["red", "orange", "purple", "brown"]):
        xs = list(xs)
        for i, xv in enumerate(xs):
            ax.axvline(xv, color=color, linewidth=0.6, alpha=0.6, label=f"{label} ({len(xs)})" if i == 0 else None)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# --- interactive --------------------------------------------------------------------------------
def live_frontend() -> bool:
    """Whether this kernel was started by a Jupyter server (JupyterLab, Notebook 7), which sets
    JPY_SESSION_NAME in the kernel's environment; papermill, nbval and nbclient kernels have no frontend."""
    return "JPY_SESSION_NAME" in os.environ


def browser(show_view: Callable[[int, int], Any], n_frames: int, n_cameras: int,
            camera_names: Sequence[str] | None = None, interactive: bool | None = None) -> Any:
    """ipywidgets frame/camera browser: a slider and a dropdown call `show_view(frame, camera)`, which draws.

    Returns the widget, or None (shows nothing) when `interactive` is False. interactive=None means
    `live_frontend()`: headless runs (papermill, nbval) get no widgets at all, because nbclient can hang
    on widget traffic (jupyter/nbclient#312) and a static notebook could not use them anyway.
    """
    if not (live_frontend() if interactive is None else interactive):
        return None
    import ipywidgets as widgets

    frame = widgets.IntSlider(0, 0, max(n_frames - 1, 0), description="frame", continuous_update=False)
    options = list(camera_names) if camera_names else [str(i) for i in range(n_cameras)]
    camera = widgets.Dropdown(options=[(name, i) for i, name in enumerate(options)], value=0, description="camera")
    out = widgets.Output()

    def update(*_: Any) -> None:
        with out:
            out.clear_output(wait=True)
            show_view(frame.value, camera.value)
            plt.show()

    frame.observe(update, "value")
    camera.observe(update, "value")
    update()
    return widgets.VBox([widgets.HBox([frame, camera]), out])


def plot_by_group(tables: Mapping[str, Any], columns: Sequence[str], labels: Sequence[str] | None = None,
                  title: str | None = None, size: float = 3.2) -> Figure:
    """One panel per column, one box per group (e.g. per preprocessing method) with its values overlaid.

    tables: {group: DataFrame (or dict of arrays)} holding `columns`; labels: axis label per column.
    """
    fig, axes = plt.subplots(1, len(columns), figsize=(size * len(columns) * max(1, len(tables)) / 3, size),
                             squeeze=False)
    names = list(tables)
    for ax, col, lab in zip(axes[0], columns, labels or columns):
        data = [np.asarray(tables[n][col], dtype=float) for n in names]
        ax.boxplot(data, showfliers=False)
        for i, d in enumerate(data, start=1):
            jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(d))
            ax.scatter(i + jitter, d, s=6, alpha=0.5)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(lab, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- sequences (notebook 07) ------------------------------------------------------------------------------
def plot_trajectory(tracks: Mapping[str, Any], ax: Any = None, arrow_every: int = 4, arrow_mm: float = 12.0,
                    title: str | None = None) -> Any:
    """Top view of centroid paths {label: DataFrame with centroid_x_mm, centroid_y_mm[, heading_deg]} in rig mm,
    one colour each, with heading arrows every `arrow_every` frames (where heading_deg is given); a dot marks
    the first frame. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    for n, (label, df) in enumerate(tracks.items()):
        x, y = df["centroid_x_mm"].to_numpy(), df["centroid_y_mm"].to_numpy()
        ax.plot(x, y, "-", color=f"C{n}", linewidth=1.2, label=label)
        ax.plot(x[:1], y[:1], "o", color=f"C{n}", markersize=4)
        if "heading_deg" in df:
            h = np.radians(df["heading_deg"].to_numpy())
            s = slice(None, None, max(1, arrow_every))
            ax.quiver(x[s], y[s], arrow_mm * np.cos(h[s]), arrow_mm * np.sin(h[s]), color=f"C{n}", angles="xy",
                      scale_units="xy", scale=1.0, width=0.004, alpha=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "centroid path (top view), arrows: heading", fontsize=9)
    return ax


def plot_readouts(series: Mapping[str, Any], columns: Sequence[str], x: str = "timestamp_s",
                  units: Mapping[str, str] | None = None, size: tuple[float, float] = (3.6, 2.6)) -> Figure:
    """One panel per readout column over time: {label: DataFrame} overlaid (e.g. predicted, smoothed, true)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(size[0] * len(columns), size[1]), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for n, (label, df) in enumerate(series.items()):
            if col in df:
                xs = df[x] if x in df else df.index
                ax.plot(xs, df[col], color=f"C{n}", linewidth=1.0, label=label)
        ax.set_title(col + (f" ({units[col]})" if units and col in units else ""), fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
