# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · The rig data
#
# Everything downstream starts from a **rig folder**: per camera and frame an RGB image and a binary mask,
# a calibration (OpenCV, millimetres, world Z-up: MAMMAL's `new_cam.pkl`, or the DANNCE `.mat` or anipose `.toml`
# that `rig.json` names) and `rig.json` (layout in `DESIGN.md`).
#
# With `rig_dir = None` the workbook builds its own: a procedural mouse made of 3D Gaussians (adult C57BL/6
# proportions; it walks, turns, bends its spine, turns its head, rears and curls its tail), filmed by a
# virtual copy of the 6-camera markerless_mouse_1 rig, with the ground-truth Gaussians of every frame
# (`gt/`). With `rig_lens = "real"` the virtual cameras have the real calibration's skew and strong lens
# distortion, and the arena lets the mouse reach the image border as often as in real recordings
# (`arena_radius_mm`). Point `rig_dir` at a real rig laid out the same way and the rest of the workbook runs on it.

# %% tags=["parameters"]
out_dir = "../outputs/smoke"
seed = 0
rig_dir = None         # a real rig folder; None builds the synthetic rig in <out_dir>/rig
n_frames = 8           # synthetic rig: frames to film
rig_scale = 0.25       # synthetic rig: images are the real rig's 1152x1024 times this
n_gaussians = 4000     # synthetic rig: gaussians per mouse
rig_lens = "real"      # synthetic rig: "real" (skew + strong distortion of markerless_mouse_1) or "pinhole"
arena_radius_mm = 110.0  # synthetic rig: how far the mouse wanders from the arena centre (110: often at the border)
frame = 0              # the frame shown below

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from facelift_lib import calibration, camera_report, preprocess, rig, synthetic_rig, viz
from facelift_lib.workbook import record, rounded

rig_dir = synthetic_rig.workbook_rig(rig_dir, out_dir, n_frames=n_frames, seed=seed, image_scale=rig_scale,
                                     n_gaussians=n_gaussians, lens=rig_lens, arena_radius_mm=arena_radius_mm)
r = rig.load_rig(rig_dir)
print(f"rig: {len(r.names)} cameras {r.names}, {len(r.frames)} frames, {r.width}x{r.height} px, "
      f"units {r.meta.get('units', '?')}")

# %% [markdown]
# ## One frame, all views
# Green: the mask outline. Red cross: the mask's centre of mass, the point preprocessing centres on.

# %%
raw = rig.read_rig_frame(r, frame)
images, masks = raw.as_tensors()
stats = preprocess.mask_stats(raw.masks)
area_fraction = stats.area / (r.width * r.height)
titles = [f"{n}  mask {a:.1%}" for n, a in zip(r.names, area_fraction)]
fig = viz.image_grid(images, masks=masks, titles=titles, marks=stats.com, ncols=3, size=2.8,
                     suptitle=f"frame {frame}")
plt.show()

# %% [markdown]
# Mask area per view over all frames: how large the mouse is in each camera, and whether any view loses it.

# %%
all_stats = [preprocess.mask_stats(rig.read_rig_frame(r, t).masks) for t in r.frames]
areas = np.stack([s.area for s in all_stats]) / (r.width * r.height)              # [F,V]
on_border = np.stack([s.touches_border for s in all_stats])                        # [F,V] raw mask on the border
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(r.frames, areas, marker=".")
ax.set(xlabel="frame", ylabel="mask area / image area", title="mask area per view")
ax.legend(r.names, fontsize=7, ncols=3)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Browse frames and cameras (JupyterLab only)
# The slider and the dropdown need a live frontend: in headless runs (papermill, nbval) and in the HTML
# this cell shows nothing (`viz.browser(..., interactive=True)` forces it elsewhere, e.g. in VS Code).

# %%
def show_view(t: int, v: int) -> None:
    img, msk = rig.read_rig_frame(r, t).as_tensors()
    viz.image_grid(img[v:v + 1], masks=msk[v:v + 1], titles=[f"{r.names[v]}, frame {t}"], size=4)


viz.browser(show_view, n_frames=len(r.frames), n_cameras=len(r.names), camera_names=r.names)

# %% [markdown]
# ## The rig in 3D
# Camera frustums (the short tick marks each image's "up") and, for the synthetic rig, the ground-truth
# Gaussian centres of this frame. World millimetres, Z up.

# %%
gt = rig.load_ground_truth(r, frame) if rig.has_ground_truth(r) else None
points = None if gt is None else gt.means
colors = None if gt is None else gt.colors
fig = viz.plot_camera_frustums_mpl(r.cams, points=points, colors=colors, title=f"rig, frame {frame} (mm)")
plt.show()

# %% [markdown]
# Interactive version (rotate and zoom in JupyterLab):

# %%
viz.plot_cameras_3d(r.cams, points=points, colors=colors, max_points=2000)

# %% [markdown]
# ## The lenses
# Skew (K[0,1], px) is kept as the calibration has it; preprocessing absorbs it in its warp. A strong lens's
# radial polynomial folds back beyond some undistorted radius (`calibration.distortion_valid_radius`): no pixel
# may be sampled from beyond it (it would copy bits of the mouse to where it is not). Corner radius: the
# undistorted radius of the farthest raw image corner, for comparison.

# %%
dist = r.cams.dist.numpy() if r.cams.dist is not None else np.zeros((len(r.names), 5))
corners = np.array([[0, 0, 1], [r.width, 0, 1], [0, r.height, 1], [r.width, r.height, 1]], dtype=float)
corner_r = [float(np.nanmax(np.linalg.norm(calibration.undistort_normalized(
    (corners @ np.linalg.inv(r.cams.K[v].numpy()).T)[:, :2], dist[v]), axis=-1))) for v in range(len(r.names))]
lenses = pd.DataFrame({"skew px": r.cams.skew.numpy(), "k1": dist[:, 0], "k2": dist[:, 1], "k3": dist[:, 4],
                       "valid radius": calibration.distortion_valid_radius(dist), "corner radius": corner_r,
                       "raw mask on border": on_border.mean(0)}, index=r.names)
lenses.round(4)

# %%
rig_table = camera_report.describe(r.cams)
rig_table[["name", "distance", "elevation_deg", "azimuth_deg", "fx", "fy", "pp_dx_px", "pp_dy_px"]].round(2)

# %%
for name, value in {"n_frames": len(r.frames), "n_cameras": len(r.names), "image_width": r.width,
                    "image_height": r.height, "mask_area_fraction_mean": float(areas.mean()),
                    "mask_area_fraction_min": float(areas.min()), "raw_mask_on_border_rate": float(on_border.mean()),
                    "skew_abs_max_px": float(r.cams.skew.abs().max())}.items():
    record(name, value)

# %%
# NBVAL_CHECK_OUTPUT
print("frames, cameras, size:", len(r.frames), len(r.names), r.width, r.height)
print("mask area fraction, frame", frame, ":", rounded(area_fraction, 3))
print("mask area fraction, mean over frames:", rounded(areas.mean(), 3))
print("camera distance to the arena origin (mm):", rounded(rig_table["distance"], 1))
print("raw masks on the image border:", int(on_border.sum()), "of", on_border.size)
