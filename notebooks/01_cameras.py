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
# # 01 · Cameras: FaceLift's versus the mouse rig's
#
# FaceLift's GS-LRM only ever saw one kind of camera: a pinhole at distance 2.7 from the head, looking
# exactly at it, level, principal point at the image centre, fx = fy = 548.99 at 512², world Z-up; at
# inference six of them at elevation 0° every 45°–90° of azimuth, in training 32 at elevation 20°. The
# model reads cameras only through its per-pixel rays, so every way the mouse rig differs shows up as rays
# it has never seen. This notebook measures those differences, side by side:
#
# * **FaceLift standard**: the 6 inference cameras (`cameras.facelift_standard()`);
# * **FaceLift human sample**: the cameras of the real FaceLift training sample (if `human_sample_dir` exists);
# * **mouse rig, mm**: the rig's calibration as it is (millimetres, aimed at the arena);
# * **mouse rig, FaceLift units**: after `rig.rig_to_facelift` (mouse centre at the origin, mean distance 2.7).

# %% tags=["parameters"]
out_dir = "../outputs/smoke"
seed = 0
rig_dir = None         # a real rig folder; None uses the synthetic rig in <out_dir>/rig (built if missing)
human_sample_dir = "../../shared/facelift_reference/human_sample"  # FaceLift's sample; skipped if absent
frame = 0              # the frame whose masks locate the mouse (the centre the rig is normalised about)
ray_grid = 32          # rays per image side when comparing Plücker rays per view

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from facelift_lib import camera_report, cameras, preprocess, rig, synthetic_rig, viz
from facelift_lib.workbook import record, rounded

rig_dir = synthetic_rig.workbook_rig(rig_dir, out_dir)
r = rig.load_rig(rig_dir)
standard = cameras.facelift_standard()

human_json = Path(human_sample_dir) / "gslrm" / "sample_000" / "opencv_cameras.json"
human = cameras.Cameras.from_opencv_json(human_json) if human_json.is_file() else None
if human is None:
    print(f"note: {human_json} not found, so the real FaceLift sample's cameras are left out "
          "(set human_sample_dir to the shared facelift_reference/human_sample folder to include them)")

# %% [markdown]
# The rig is normalised about the mouse, not the arena: its centre is triangulated from the mask centroids
# of frame `frame` (what preprocessing does on real data). On the synthetic rig we can check it against
# the ground-truth body centre.

# %%
masks = rig.read_rig_frame(r, frame).masks
# in the pixels preprocessing plans in: undistorted (lens model, skew) when the calibration has them
stats = preprocess.camera_mask_stats(masks, r.cams)
center_mm = torch.as_tensor(preprocess.mouse_center(r.cams, stats.com))
mouse, scale, translation = rig.rig_to_facelift(r.cams, center_mm)
print(f"mouse centre (triangulated, mm): {center_mm.numpy().round(2)};  scale {scale:.5f} FaceLift units per mm")
has_gt = rig.has_ground_truth(r)
center_error_mm = float((center_mm - rig.load_centers(r)[frame]).norm()) if has_gt else None
if has_gt:
    print(f"distance to the ground-truth body centre: {center_error_mm:.2f} mm")

sets = {"FaceLift standard": standard, "FaceLift human sample": human,
        "mouse rig, mm": r.cams, "mouse rig, FaceLift units": mouse}
sets = {label: c for label, c in sets.items() if c is not None}
targets = {"mouse rig, mm": center_mm}

# %% [markdown]
# ## The numbers, per camera set
# Distance (in each set's own units), intrinsics, where each camera sits around its target, and how it is
# built (`camera_report.describe`, min and max over the views).

# %%
tables = {label: camera_report.describe(c, targets.get(label, (0.0, 0.0, 0.0))) for label, c in sets.items()}
cols = ["distance", "elevation_deg", "azimuth_gap_deg", "fx", "fy_over_fx", "hfov_deg", "pp_dx_px", "pp_dy_px",
        "up_z", "roll_deg", "lookat_error_deg"]
overview = pd.concat(tables, names=["set", "view"]).groupby(level="set", sort=False)[cols].agg(["min", "max"])
overview.T.round(3)

# %% [markdown]
# The rig view by view. Normalisation moves and scales the world only: angles and pixels stay as they are,
# the distance changes units.

# %%
(tables["mouse rig, mm"].set_index("name")
 [["distance", "elevation_deg", "azimuth_deg", "fx", "fy", "pp_dx_px", "pp_dy_px", "roll_deg", "lookat_error_deg"]]
 .assign(distance_facelift=tables["mouse rig, FaceLift units"]["distance"].to_numpy()).round(3))

# %% [markdown]
# ## Distributions
# Everything scale-free so millimetres and FaceLift units compare: the distance divided by the set's mean
# distance, field of view instead of focal length, principal-point offset as a fraction of the image
# (the normalised rig is left out here: it is the same as the rig in mm on every one of these axes).

# %%
viz.plot_camera_distributions({k: c for k, c in sets.items() if k != "mouse rig, FaceLift units"}, targets)
plt.show()

# %%
fig = plt.figure(figsize=(4.2 * len(sets), 4.2))
for i, (label, c) in enumerate(sets.items()):
    viz.plot_camera_frustums_mpl(c, ax=fig.add_subplot(1, len(sets), i + 1, projection="3d"), title=label)
plt.show()

# %% [markdown]
# The same rig to rotate and zoom (JupyterLab; static in the HTML): the rig normalised to FaceLift units, each
# camera's rays through a 4×4 grid of its pixels, the mouse of frame `frame` (ground-truth gaussian centres,
# when the rig has them), and FaceLift's standard cameras in grey, the views GS-LRM was built for.
# Click a camera in the legend to hide it with its rays.

# %%
mouse_points = rig.load_ground_truth(r, frame).transformed(scale, translation) if has_gt else None
viz.plot_cameras_3d(mouse, points=None if mouse_points is None else mouse_points.means,
                    colors=None if mouse_points is None else mouse_points.colors, max_points=2000, rays_per_side=4,
                    reference=standard, reference_name="FaceLift standard", title=f"rig in FaceLift units, frame {frame}")

# %% [markdown]
# ## Azimuth coverage
# The largest unseen azimuth sector per set (FaceLift's standard views leave 90° gaps at the sides of the
# back; the rig's cameras are spread unevenly).

# %%
for label, t in tables.items():
    s = t.sort_values("azimuth_deg")
    print(f"{label:28s} azimuths {s['azimuth_deg'].round(1).tolist()}  gaps {s['azimuth_gap_deg'].round(1).tolist()}")

# %% [markdown]
# ## Z-up or Y-up?
# FaceLift's world is Z-up. `cameras.is_z_up` reads the up axis from the cameras themselves (their up
# vectors, or where they sit around the target). A Y-up export of the standard cameras shows what a wrong
# convention looks like.

# %%
yup_standard = cameras.transform_world(standard, cameras.zup_to_yup())
checks = {**sets, "FaceLift standard, exported Y-up": yup_standard}
up_axes = {label: cameras.is_z_up(c, targets.get(label, (0.0, 0.0, 0.0)))[1] for label, c in checks.items()}
pd.Series(up_axes, name="detected up axis").to_frame()

# %% [markdown]
# ## Rays: what GS-LRM actually sees
# Each pixel's ray enters the model as `[d, o + (-o·d) d]` (direction, and the ray point nearest the
# origin). Left: the rays' directions; right: each ray line's distance from the origin (|o × d|, the norm
# of the Plücker moment). Then one number per rig view: the mean distance between its ray embedding and
# that of the nearest standard view (`camera_report.ray_distance_to_reference`; 0 = sees exactly like a standard
# view). FaceLift's own training cameras (elevation 20°) give the scale of what the model tolerates.

# %%
viz.plot_ray_distributions({"FaceLift standard": standard, "mouse rig, FaceLift units": mouse}, size=16)
plt.show()

# %%
ray_matrix = camera_report.ray_distance_matrix(mouse, standard, size=ray_grid)            # [V_rig, 6]
ray_to_standard = ray_matrix.min(dim=1).values
per_view = pd.DataFrame({"ray distance": ray_to_standard.numpy(),
                         "nearest standard view": [standard.names[i] for i in ray_matrix.argmin(dim=1)]},
                        index=mouse.names)
baselines = {"FaceLift standard": standard, "FaceLift human sample": human,
             "mouse_standard_6view (el 20°)": cameras.mouse_standard_6view()}
baseline_ray = {label: camera_report.ray_distance_to_reference(c, standard, size=ray_grid)
                for label, c in baselines.items() if c is not None}
print("reference scale, mean ray distance to the nearest standard view:",
      {label: round(float(v.mean()), 3) for label, v in baseline_ray.items()})
per_view.round(3)

# %%
viz.plot_matrix(ray_matrix, mouse.names, standard.names, title="ray distance: rig view × standard view")
plt.show()

# %% [markdown]
# ## Mismatches, graded
# Scale-free quantities where the rig differs from FaceLift's standard cameras, each graded
# ok / minor / major against `camera_report.MismatchThresholds` (the note says what it does to FaceLift).

# %%
mismatches = camera_report.domain_mismatches(standard, r.cams, target_b=center_mm)
severity_order = {"major": 0, "minor": 1, "ok": 2}
(mismatches.sort_values("severity", key=lambda s: s.map(severity_order), kind="stable")
 [["quantity", "unit", "value_a", "value_b", "deviation", "severity", "note"]].round(3))

# %%
rig_table = tables["mouse rig, mm"]
key_numbers = {
    "rig_distance_mean_mm": float(rig_table["distance"].mean()),
    "rig_distance_rel_spread": float(rig_table["distance"].std(ddof=0) / rig_table["distance"].mean()),
    "rig_elevation_min_deg": float(rig_table["elevation_deg"].min()),
    "rig_elevation_max_deg": float(rig_table["elevation_deg"].max()),
    "rig_max_azimuth_gap_deg": float(rig_table["azimuth_gap_deg"].max()),
    "rig_hfov_mean_deg": float(rig_table["hfov_deg"].mean()),
    "standard_hfov_deg": float(tables["FaceLift standard"]["hfov_deg"].mean()),
    "rig_is_z_up": up_axes["mouse rig, mm"] == "+Z",
    "rig_ray_distance_mean": float(ray_to_standard.mean()),
    "rig_ray_distance_max": float(ray_to_standard.max()),
    "n_mismatch_major": int((mismatches["severity"] == "major").sum()),
    "n_mismatch_minor": int((mismatches["severity"] == "minor").sum()),
}
if "FaceLift human sample" in baseline_ray:
    key_numbers["human_sample_ray_distance_mean"] = float(baseline_ray["FaceLift human sample"].mean())
if center_error_mm is not None:
    key_numbers["center_error_mm"] = center_error_mm
for name, value in key_numbers.items():
    record(name, value)

# %%
# NBVAL_CHECK_OUTPUT
std, hum = tables["FaceLift standard"], tables.get("FaceLift human sample")
print("standard: distance", rounded(std["distance"].mean(), 3), "elevation", rounded(std["elevation_deg"].mean(), 1),
      "fx", rounded(standard.fx.mean(), 2))
if hum is not None:
    print("human sample: views", len(hum), "distance", rounded(hum["distance"].mean(), 3),
          "elevation", rounded(hum["elevation_deg"].mean(), 1))
print("rig distance to the mouse (mm):", rounded(rig_table["distance"], 1))
print("rig elevation (deg):", rounded(rig_table["elevation_deg"], 1))
print("rig max azimuth gap (deg):", rounded(rig_table["azimuth_gap_deg"].max(), 1))
print("up axes:", up_axes)
print("ray distance to the nearest standard view:", rounded(ray_to_standard, 2))
print("severities:", dict(zip(mismatches["quantity"], mismatches["severity"])))
