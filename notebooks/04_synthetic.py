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
# # 04 · Synthetic 6-view dataset from a diffusion model
#
# For every input sample we take its reference view, generate 6 views with a multi-view diffusion model
# (DDIM), and write a FaceLift sample whose cameras are the **standard spec the model
# was trained for** (`mouse_standard_6view`: distance 2.7, elevation 20°, FaceLift intrinsics scaled to
# the image size), never the input's cameras. Every sample must pass `io.validate_sample`; the first that
# fails stops the run with its name. The lists written here (`{out_dir}/synthetic/train.txt`, `val.txt`)
# are an optional training set for 05_gslrm.
#
# Which model: `diffusion_weights = "shipped"` (the default) is the small model shipped with the workbook
# (`weights/mvdiffusion_demo.pt`, sha256-checked, trained on 1200 procedural mice; `weights/manifest.json`);
# `"run"` is the newest checkpoint of 03's run in this output folder (the full profile's choice); a path is a
# checkpoint file or a run folder (`weights.load_mvdiffusion`).
#
# The smoke inputs are 03's standard-view samples (their view 0 is the reference), so every generated
# view has a ground-truth view at the same camera and we can measure it.

# %% tags=["parameters"]
out_dir = "../outputs/smoke"
seed = 0
diffusion_weights = "shipped"  # "shipped" (weights/mvdiffusion_demo.pt), "run" (newest checkpoint of out_dir/mvdiffusion/run, 03) or a path
input_dir = None  # default: out_dir/mvdiffusion/data (train.txt, val.txt; view 0 is the reference)
num_inference_steps = 20  # smoke: cheaper than FaceLift's 50 (full profile: 50)
guidance_scale = 1.0  # smoke: the shipped pixel model is best unguided (BENCHMARKS, run 7); FaceLift's (full profile): 3.0
eta = 0.0  # DDIM eta; smoke: deterministic DDIM for the small pixel model; FaceLift's (full profile): 1.0
strength = 0.4  # smoke: start from the model's retrieval prior noised 40 % of the way (8 of the 20 steps; BENCHMARKS,
                # "prior-started sampling"); FaceLift's (full profile): 1.0, pure noise
output_size = None  # default: the model's size
max_samples = 8  # per split (None: all); each sample is a full DDIM run

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from facelift_lib import viz
from facelift_lib.images import resize_images
from facelift_lib.io import load_sample
from facelift_lib.synthetic import generate_dataset
from facelift_lib.weights import load_mvdiffusion
from facelift_lib.workbook import record, require

out = Path(out_dir)
input_dir = Path(input_dir) if input_dir else out / "mvdiffusion" / "data"
inputs = {split: input_dir / f"{split}.txt" for split in ("train", "val")}
require("04_synthetic", {path: "03_mvdiffusion" for path in inputs.values()})
pipe = load_mvdiffusion(diffusion_weights, out / "mvdiffusion" / "run")  # "run": 03's newest checkpoint
print(f"diffusion model ({diffusion_weights!r}):", Path(pipe.source).name)

# %%
result = generate_dataset(pipe, inputs, out / "synthetic", num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, eta=eta, output_size=output_size, max_samples=max_samples,
                          seed=seed, strength=strength)

# %%
for sample in result.samples["val"][:2]:
    generated, cams = load_sample(sample)
    source, _ = load_sample(cams.meta["source_sample"])
    panels = torch.cat([resize_images(source, generated.shape[-1]), generated])  # both composited on white
    titles = [f"true {v}" for v in range(len(source))] + [f"generated {v}" for v in range(len(generated))]
    titles[0] = "true 0 = input"
    viz.image_grid(panels, masks=panels[:, 3], titles=titles, ncols=len(generated), size=1.8,
                   suptitle=f"{sample.name}: true views (top), generated at {cams.meta['camera_type']} (bottom)")
    plt.show()

# %% [markdown]
# ## Validation checklist (every written sample)

# %%
checks = result.checklist
checks.round(6)

# %%
# NBVAL_CHECK_OUTPUT
print("samples written:", len(checks), {split: len(v) for split, v in result.samples.items()})
print("all have 6 views:", bool((checks["views"] == 6).all()))
print("camera types:", sorted(set(checks["camera_type"])))
print("camera distance 2.7 (max error < 1e-6):", bool((checks["distance_err"] < 1e-6).all()))
print("intrinsics = spec scaled to the size (focal < 1e-6, principal < 1e-6 px):",
      bool((checks["focal_rel_err"] < 1e-6).all() and (checks["principal_err_px"] < 1e-6).all()))
print("validate_sample problems:", int(checks["problems"].sum()))

# %% [markdown]
# ## Generated vs true views (per view, means over samples)
# `*_masked` inside the true mask, `*_full` over the image; Mask IoU of the alphas.

# %%
quality = result.quality.groupby("view")[["psnr_full", "psnr_masked", "ssim_full", "ssim_masked", "mask_iou"]].mean()
quality.loc["mean"] = quality.mean()
quality.round(3)

# %%
record("synthetic_samples", len(checks))
record("synthetic_validation_problems", int(checks["problems"].sum()))
record("synthetic_psnr_masked", float(quality.loc["mean", "psnr_masked"]))
record("synthetic_mask_iou", float(quality.loc["mean", "mask_iou"]))
print("lists for 05_gslrm:", {split: str(p.relative_to(out)) for split, p in result.lists.items()})
