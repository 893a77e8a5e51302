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
# # 03 · Multi-view diffusion: one mouse image in, six standard views out
#
# FaceLift's first stage turns one image into 6 views at fixed cameras. Its UNet is a stock diffusers
# `UNet2DConditionModel` whose self-attention (`attn1`) spans the 6 views of a sample
# (`facelift_lib.mvdiffusion.set_multiview_attention`, *sparse*: every view attends to view 0 and itself).
#
# **Training targets.** The preprocessed rig samples (02) hold the rig's own 6 cameras, which are not the
# standard cameras GS-LRM expects. So the diffusion targets here are the synthetic rig's *ground-truth*
# mouse rendered at `mouse_standard_6view` (distance 2.7, elevation 20°, azimuths 0…300°; intrinsics
# scaled to the working size), in the same normalisation as each preprocessed sample. View 0 is the
# reference (the input image); the targets are all 6 views, the reference included.
#
# **Smoke profile (defaults):** a small pixel-space model (RGBA at 64², attention only at 8²) that starts
# from the **shipped weights** (`init_weights = "shipped"`: `weights/mvdiffusion_demo.pt`, sha256-checked;
# its config, widths 24/48/96/96, and training recipe are in `weights/manifest.json`; trained on 1200
# procedural mice) and is fine-tuned on this run's targets for a CPU minute or two (lr 2e-4, 150 steps,
# `mvdiffusion.train.SHIPPED_FINETUNE`): the demo shows training *and* a model that makes a mouse.
# `init_weights = None` trains the smaller smoke model (widths 16/32/64/64) from scratch instead (lr 1e-3,
# 200 steps): expect noisy mouse-coloured blobs in roughly the right places, not a usable model (with min-SNR
# weighting the low-noise timesteps are learnt last, so a short run leaves speckle in the samples).
# **Full profile:** set `facelift_pipeline` to a local FaceLift pipeline folder (and `init_weights: null`) to
# fine-tune FaceLift's UNet (lr 5e-6, 500 warmup steps), or train the small model from scratch at its size.
#
# We watch one failure above all: the **identity mapping** (every generated view a copy of the input),
# which a random reference view taught the research model. The identity-mapping score compares each
# generated non-reference view with the input and with its own true view.

# %% tags=["parameters"]
out_dir = "../outputs/smoke"
seed = 0
rig_dir = None  # default: out_dir/rig (notebook 00_data)
preprocessed_dir = None  # default: out_dir/data (notebook 02_preprocessing: train.txt, val.txt)
render_size = 128  # standard-camera renders of the ground truth (px); the shipped model trained on 128² renders
yaws_per_frame = 4  # headings of each ground-truth mouse (more training samples)
image_size = 64  # the small model's UNet resolution (with init_weights: the shipped model's, 64, in a 96² frame)
init_weights = "shipped"  # start from the shipped weights (weights/mvdiffusion_demo.pt; or a manifest name); None: from scratch
overwrite = True  # a fresh run replacing an earlier one (full profile: False, and resume via train_overrides)
train_overrides = {}  # TrainParams fields over the recipe, e.g. {"max_steps": 2000, "resume": "latest"}
# (the run folder <out_dir>/mvdiffusion/run: checkpoints/ckpt_{step:016d}.pt, log.jsonl, config.json, samples/)
facelift_pipeline = None  # full profile: local FaceLift diffusers folder to fine-tune (nothing is downloaded;
                          # needs init_weights None)
view_embeddings = None  # full profile: [6,77,1024] per-view embeddings file for the mouse cameras

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from facelift_lib import viz
from facelift_lib.camera_report import describe
from facelift_lib.io import load_sample, read_list_file
from facelift_lib.mvdiffusion import train as mvtrain
from facelift_lib.synthetic import build_standard_view_dataset
from facelift_lib.synthetic_rig import rig_folder
from facelift_lib.training import list_checkpoints
from facelift_lib.workbook import record, require

out = Path(out_dir)
rig_dir = rig_folder(rig_dir, out)
preprocessed_dir = Path(preprocessed_dir) if preprocessed_dir else out / "data"
lists = {split: preprocessed_dir / f"{split}.txt" for split in ("train", "val")}
require("03_mvdiffusion", {rig_dir / "rig.json": "00_data", **{p: "02_preprocessing" for p in lists.values()}})
if facelift_pipeline is None:  # a facelift_pipeline folder that does not exist is the trainer's error, naming it
    print("No FaceLift pipeline given (facelift_pipeline=None): training the small CPU model "
          + (f"from the shipped weights ({init_weights!r})." if init_weights else "from scratch.")
          + " Set facelift_pipeline to a local FaceLift diffusers folder to fine-tune FaceLift instead.")

# %% [markdown]
# ## Training targets: the ground-truth mouse at the standard cameras

# %%
data = build_standard_view_dataset(rig_dir, lists, out / "mvdiffusion" / "data", size=render_size,
                                   yaws_per_frame=yaws_per_frame, seed=seed)
n_samples = {split: len(read_list_file(f)) for split, f in data.items()}
images, cams = load_sample(read_list_file(data["train"])[0])
angles = describe(cams)
viz.image_grid(images, masks=images[:, 3], suptitle="one training sample (view 0 = the reference input)",
               titles=[f"view {v}: az {a:.0f}°, el {e:.0f}°" for v, (a, e) in
                       enumerate(zip(angles["azimuth_deg"], angles["elevation_deg"]))])
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print("train samples:", n_samples["train"], " val samples:", n_samples["val"])
print("views per sample:", len(cams), " size:", cams.width, " camera distance:", round(float(cams.centers.norm(dim=-1).mean()), 2))

# %% [markdown]
# ## Train

# %%
params = mvtrain.profile_train_params(out, seed=seed, facelift_pipeline=facelift_pipeline,
                                     view_embeddings=view_embeddings, image_size=image_size,
                                     init_weights=init_weights, overrides={"overwrite": overwrite, **train_overrides})
print(f"starts from: {params.init_from or 'scratch'}  pixel_model={params.pixel_model}")
print(f"model={params.model}  reference_view_idx={params.reference_view_idx}  random_reference={params.random_reference}  "
      f"lr={params.lr}  warmup={params.warmup_steps}  steps={params.max_steps}  batch={params.batch_size}")
result = mvtrain.train(params)

# %%
steps, validations = mvtrain.read_steps_and_validations(params.run_dir)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
viz.plot_curves({"step": [s["step"] for s in steps], "loss": [s["loss"] for s in steps]}, "step", "loss",
                logy=True, ax=axes[0], title="training loss (min-SNR weighted v-prediction, mean per log interval)")
ident = mvtrain.identity_table(validations)
viz.plot_curves(ident, "step", ["to_reference_db", "to_ground_truth_db", "gt_to_reference_db"], ax=axes[1],
                title="identity mapping: PSNR of generated views to the input vs to their true views")
plt.show()
ident

# %% [markdown]
# `to_reference_db` above `to_ground_truth_db` (score_db > 0) means the generated views look more like the
# input than like the views they should be: the identity mapping. `gt_to_reference_db` is what a perfect
# model would show as its `to_reference_db`. A step where most views are closer to the input
# (`identity_fraction` > 0.5) by more than 0.25 dB on average is flagged `collapse` and printed in the log.
#
# Trained from scratch (`init_weights = None`), expect the flag: a model trained for a couple of hundred steps
# first learns to copy the reference silhouette, which is concatenated to every view's input, before it learns
# to turn it. That is exactly the failure this score exists to catch; in a real run `score_db` must fall below
# 0 and stay there, and a flag late in training means the model has collapsed. Started from the shipped
# weights, the first validation already shows what the shipped model does on this run's mice: a flag there is
# the shipped model's, not the fine-tuning's.

# %%
for step, samples in mvtrain.load_validation_samples(params.run_dir).items():
    panels, titles = mvtrain.validation_panels(samples, 0)
    viz.image_grid(panels, titles=titles, ncols=panels.shape[0] // 2, size=1.6,
                   suptitle=f"step {step}: reference and true views (top), generated views (bottom)")
    plt.show()

# %% [markdown]
# ## Per-view quality at the last validation (generated vs true, means over the validation samples)
# `*_masked` are measured inside the true mask, `*_full` over the whole image; Mask IoU compares alphas.

# %%
quality = mvtrain.quality_table(validations[-1])
quality.round(3)

# %%
last = validations[-1]
record("mvdiffusion_model", params.model)
record("mvdiffusion_init_weights", init_weights)
record("mvdiffusion_final_loss", steps[-1]["loss"])
record("mvdiffusion_identity_score_db", last["identity"]["score_db"])
record("mvdiffusion_collapse_flagged", any(v["identity"]["collapse"] for v in validations))
record("mvdiffusion_psnr_masked", float(quality.loc["mean", "psnr_masked"]))
record("mvdiffusion_mask_iou", float(quality.loc["mean", "mask_iou"]))
record("mvdiffusion_checkpoint", str(result.last_checkpoint))

# %%
# NBVAL_CHECK_OUTPUT
print("validations:", len(validations), " checkpoints kept:", len(list_checkpoints(params.run_dir)))
print("training steps:", steps[-1]["step"])
