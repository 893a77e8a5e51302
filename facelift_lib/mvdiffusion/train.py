"""Train a multi-view diffusion model: the small pixel model from scratch or from a checkpoint (`init_from`:
the shipped weights in notebook 03's default, `profile_train_params(init_weights="shipped")`), or FaceLift's
UNet fine-tuned from a local pipeline folder (`init_from`).

One function, `train(params)`, serves the notebook (a single CPU/GPU process) and multi-GPU runs:

    python -m facelift_lib.mvdiffusion.train params/full.yaml                # one process
    accelerate launch -m facelift_lib.mvdiffusion.train params/full.yaml     # N GPUs
    torchrun --nproc_per_node=N -m facelift_lib.mvdiffusion.train params/full.yaml

What the research taught (and the defaults encode):
- The reference view is fixed (`reference_view_idx=0`) and the targets are all V views, the reference
  included. A random reference taught the research model an identity mapping (every view = the input);
  `random_reference=True` keeps that behaviour as an explicit option, for ablations only.
- All views of a sample share one timestep; v-prediction; min-SNR weighting (gamma 5); the condition is
  dropped so classifier-free guidance works at sampling; EMA; gradient clipping; warmup. Fine-tuning the
  large model exploded at lr 2e-5 and was stable at 5e-6 with 500 warmup steps.
- Fine-tuning FaceLift's UNet conditions as FaceLift trained it (`condition_drop_masks`, `on_backgrounds`):
  the CLIP condition alone, both, or the reference latent alone dropped with probability `cond_drop_prob`
  (0.05) each, to FaceLift's null values (zero latent, all-zero class label); one independent embedding
  noise row per view; training images composited on a random white / black / grey background. The small
  pixel model drops its reference with `cond_drop_prob` and stays on white (it models alpha).
- A checkpoint or init path that does not exist is an error (a wrong path that only warned once made
  the research generate human faces from mouse inputs for days). The run folder, `resume` (None / "latest" /
  a path) and `overwrite`, checkpoint names, log.jsonl and config.json are `facelift_lib.training`'s, as for
  GS-LRM; a resumed run also cuts the validation samples back to its checkpoint's step. A step with a
  non-finite loss or gradient is skipped (not applied), logged with its reason and printed.
- Every validation step computes an identity-mapping score (is each generated view closer to the input
  than to its own ground truth?) and flags mode collapse in the log.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..images import BACKGROUNDS, composite, on_white, resize_rgba
from ..io import check_number_fields, load_sample, read_list_file, write_image
from ..locks import FolderLock, die_with_parent, launched_worker
from ..training import (append_log, check_resume, clear_run, is_first_process, list_checkpoints, note, read_log,
                        read_profile_section, resolve_resume, rewind_log, rng_state, save_checkpoint, set_rng_state,
                        skip_reason, write_config)
from .model import LatentMVDiffusion, PixelModelConfig, PixelMVDiffusion
from .pipeline import (CHECKPOINT_FORMAT, load_facelift_pipeline, load_weights, model_from_checkpoint,
                       read_checkpoint, sample_views, sampling_scheduler)


@dataclass
class TrainParams:
    """Everything a training run needs. Paths are relative to the working directory (repo root)."""

    run_dir: str = "outputs/smoke/mvdiffusion/run"  # checkpoints/, samples/, log.jsonl, config.json
    train_list: str = "outputs/smoke/mvdiffusion/data/train.txt"
    val_list: str | None = "outputs/smoke/mvdiffusion/data/val.txt"
    model: str = "pixel"  # "pixel" (small, from scratch) | "facelift" (fine-tune a local FaceLift pipeline)
    pixel_model: dict[str, Any] = field(default_factory=dict)  # PixelModelConfig fields
    init_from: str | None = None  # model="facelift": pipeline folder; model="pixel": optional checkpoint .pt
    view_embeddings: str | None = None  # model="facelift": [V,77,1024] file (FaceLift's clr_embeds.pt or mouse ones)
    learn_view_embeddings: bool = False  # model="facelift": train new per-view embeddings, initialised from the file
    camera_type: str = "mouse_standard_6view"  # the camera spec the training views were rendered at
    num_views: int = 6
    reference_view_idx: int = 0
    random_reference: bool = False  # ablation only: taught the research model an identity mapping
    mv_attention: str = "sparse"
    # optimisation
    max_steps: int = 200  # the defaults are the small model's CPU smoke recipe (~2 min)
    stop_at_step: int | None = None  # stop here with a checkpoint; the lr schedule still spans max_steps
    batch_size: int = 2
    lr: float = 1e-3  # fine-tuning FaceLift: 5e-6 (2e-5 exploded)
    lr_schedule: str = "cosine"  # any diffusers get_scheduler name: constant_with_warmup, cosine, ...
    warmup_steps: int = 30  # fine-tuning FaceLift: 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16 (GPU)
    gradient_checkpointing: bool = False
    # diffusion
    prediction_type: str = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # pixel model; the FaceLift model keeps its pipeline's schedule
    # None: the plain v-prediction loss. min-SNR-5 weights a v-loss by min(snr,5)/(snr+1), ~0 at the highest noise
    # levels, where each view's overall shape is decided: the demo model trained with it learned there so slowly
    # that it collapsed onto its input (BENCHMARKS, "Multi-view diffusion": Mask IoU 0.30 vs 0.45 at step 1000).
    min_snr_gamma: float | None = None
    # 1: timesteps uniform over [0, T). p > 1 draws t = floor(T u^(1/p)), density ~ t^(p-1): more training where the
    # views' shapes are decided (2: twice the uniform density at pure noise; BENCHMARKS, the `timestep_power` probe)
    timestep_power: float = 1.0
    cond_drop_prob: float = 0.1  # pixel: P(reference dropped); facelift: P of each of FaceLift's 3 drop cases
    random_background: bool = False  # composite training images on a random white/black/grey background
    ema_decay: float = 0.999
    # checkpoints, validation, logging
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    resume: str | None = None  # None (fresh) | "latest" (newest checkpoint if any, else fresh) | a checkpoint path
    overwrite: bool = False  # a fresh start in a run_dir with checkpoints deletes them (else that is an error)
    val_every: int = 50
    val_samples: int = 2
    val_inference_steps: int = 20
    val_guidance_scale: float = 2.0
    val_eta: float = 0.0  # DDIM eta of validation sampling (FaceLift's inference: 1.0)
    collapse_margin_db: float = 0.25
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_number_fields(self)  # max_steps="40" from a YAML fails here, naming the field
        check_resume(self.resume, self.overwrite, "TrainParams")
        if self.model not in ("pixel", "facelift"):
            raise ValueError(f"TrainParams.model must be 'pixel' or 'facelift', got {self.model!r}")
        if not 0 <= self.reference_view_idx < self.num_views:
            raise ValueError(f"reference_view_idx {self.reference_view_idx} not in [0, {self.num_views})")
        if self.prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"prediction_type must be 'v_prediction' or 'epsilon', got {self.prediction_type!r}")
        limit = 1 / 3 if self.model == "facelift" else 1.0
        if not 0 <= self.cond_drop_prob <= limit:
            raise ValueError(f"cond_drop_prob must be in [0, {limit:.3g}] for model={self.model!r} (facelift: the "
                             f"probability of each of its 3 drop cases), got {self.cond_drop_prob}")


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]  # one entry per logged training step
    validations: list[dict[str, Any]]  # one entry per validation step (identity score, per-view quality)
    checkpoints: list[Path]
    last_checkpoint: Path | None


# --- data --------------------------------------------------------------------------------------------------
def check_training_views(images: torch.Tensor, where: str, mask_level: float = 0.5) -> None:
    """Refuse a sample the diffusion model must not learn from: images [V,4,H,W] not square (resizing would
    stretch it) or with an empty alpha (no pixel > mask_level) in every view (nothing to learn, only background).
    Per-view problems beyond that are `io.validate_sample`'s (the GS-LRM dataset runs it in full)."""
    H, W = images.shape[-2:]
    if H != W:
        raise ValueError(f"{where}: views are {W}x{H}, not square; resizing to the model's square size would "
                         "stretch the mouse: crop/pad the sample to a square (preprocess writes square samples)")
    if not (images[:, 3] > mask_level).any():
        raise ValueError(f"{where}: the alpha (mask) is empty in every view; the sample shows no mouse: "
                         "remove it from the list or re-create it with its masks")


class MultiViewDataset(Dataset):
    """6-view samples from a list file -> {"views": [V,4,S,S], "reference": [4,S,S], "ref_idx"} in [0,1].

    Images are resized to the model's size once and kept in memory (`cache`, for small datasets).
    """

    def __init__(self, list_file: str | Path, num_views: int, size: int, reference_view_idx: int = 0,
                 random_reference: bool = False, seed: int = 0, cache: bool = True) -> None:
        self.dirs = read_list_file(list_file)
        self.list_file, self.num_views, self.size = Path(list_file), num_views, size
        self.reference_view_idx, self.random_reference = reference_view_idx, random_reference
        self.gen = torch.Generator().manual_seed(seed)
        self._cache: dict[int, torch.Tensor] = {}
        self.cache = cache
        self.placeholders_left = 0  # `fast_forward`: items to hand out without loading them

    def __len__(self) -> int:
        return len(self.dirs)

    def views(self, i: int) -> torch.Tensor:
        if i in self._cache:
            return self._cache[i]
        images, cams = load_sample(self.dirs[i], background=None)
        if len(cams) != self.num_views:
            raise ValueError(f"{self.dirs[i]} (listed in {self.list_file}): {len(cams)} views, the model "
                             f"generates {self.num_views}; multi-view diffusion samples need exactly that many")
        check_training_views(images, f"{self.dirs[i]} (listed in {self.list_file})")
        if images.shape[-1] < self.size:
            raise ValueError(f"{self.dirs[i]} (listed in {self.list_file}): views are {images.shape[-1]}² but the "
                             f"model works at {self.size}²; upsampled targets teach blur: build the training set at "
                             f">= {self.size} px (notebook 03: render_size)")
        images = resize_rgba(images, self.size)  # straight RGBA, resized premultiplied
        if self.cache:
            self._cache[i] = images
        return images

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.reference_view_idx
        if self.random_reference:
            r = int(torch.randint(self.num_views, (1,), generator=self.gen))
        if self.placeholders_left > 0:
            self.placeholders_left -= 1
            return {"views": torch.zeros(0), "reference": torch.zeros(0), "ref_idx": r}
        views = self.views(i)
        return {"views": views, "reference": views[r], "ref_idx": r}


def fill_view_prior_bank(model: PixelMVDiffusion, train_set: MultiViewDataset) -> None:
    """The retrieval prior's bank (`view_prior`) from the first `view_prior_mice` training mice, in list order."""
    M = model.cfg.view_prior_mice
    if len(train_set) < M:
        raise ValueError(f"{train_set.list_file}: {len(train_set)} training mice, but pixel_model.view_prior_mice is "
                         f"{M}: list at least that many, or set view_prior_mice to at most {len(train_set)}")
    views = torch.stack([train_set.views(i) for i in tqdm(range(M), desc="view prior bank", leave=False,
                                                           mininterval=5.0)])
    with torch.no_grad():
        model.set_view_prior_bank(views)


def _infinite(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def fast_forward(batches: Iterator[dict[str, Any]], dataset: MultiViewDataset, n_batches: int, batch_size: int,
                 in_process: bool) -> None:
    """Draw the first n_batches of `batches`, so that a resumed run's data order goes on where the stopped run's
    was (the loader's shuffle generator and the dataset's draw exactly what they drew). in_process (num_workers 0):
    the dataset hands out placeholders instead of loading those items; with workers each item is loaded."""
    if in_process:  # every batch is full (drop_last), or the whole dataset when it is smaller than a batch
        dataset.placeholders_left = n_batches * min(batch_size, len(dataset))
    for _ in range(n_batches):
        next(batches)
    dataset.placeholders_left = 0


# --- conditioning as FaceLift trains it -----------------------------------------------------------------------
RANDOM_BACKGROUNDS = tuple(BACKGROUNDS[name] for name in ("white", "black", "grey"))  # FaceLift's, as colours


def condition_drop_masks(batch: int, kind: str, prob: float, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(drop_reference [B], drop_clip [B]) bool for one training batch.

    kind "latent" (FaceLift's scheme): one uniform u per sample; u < p drops the CLIP condition alone,
    p <= u < 2p both, 2p <= u < 3p the reference latent alone (p = prob, 0.05 in FaceLift).
    kind "pixel": the reference (its only condition) is dropped with probability `prob`.
    """
    u = torch.rand(batch, generator=generator)
    if kind == "pixel":
        return u < prob, torch.zeros(batch, dtype=torch.bool)
    return (u >= prob) & (u < 3 * prob), u < 2 * prob


def on_backgrounds(images: torch.Tensor, backgrounds: torch.Tensor) -> torch.Tensor:
    """RGBA [B,...,4,H,W] straight alpha -> RGBA with RGB composited on backgrounds [B,3] and alpha 1
    (so the model's own white compositing leaves it as it is)."""
    return torch.cat([composite(images, backgrounds), torch.ones_like(images[..., 3:4, :, :])], -3)


def random_backgrounds(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B,3]: white, black or grey per sample, uniformly."""
    return torch.tensor(RANDOM_BACKGROUNDS)[torch.randint(len(RANDOM_BACKGROUNDS), (batch,), generator=generator)]


# --- losses -------------------------------------------------------------------------------------------------
def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float | None,
                    prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights [B] of min-SNR-gamma (Hang et al. 2023); ones when gamma is None.

    epsilon: min(snr, g) / snr; v-prediction: min(snr, g) / (snr + 1).
    """
    if gamma is None:
        return torch.ones(timesteps.shape, device=timesteps.device)
    ac = alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = ac / (1 - ac)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr.clamp(min=1e-8)


def sample_timesteps(batch: int, num_train_timesteps: int, power: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """[batch] training timesteps in [0, T): uniform for power 1 (torch.randint, the draw every earlier run made),
    else floor(T u^(1/power)) with u uniform, a density ~ t^(power-1) (power > 1 favours the noisy end)."""
    if power <= 0:
        raise ValueError(f"timestep_power must be > 0, got {power}")
    if power == 1.0:
        return torch.randint(0, num_train_timesteps, (batch,), generator=generator)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return (num_train_timesteps * u.pow(1.0 / power)).long().clamp(max=num_train_timesteps - 1)


def diffusion_loss(model, noise_scheduler, x0: torch.Tensor, cond: dict[str, torch.Tensor],
                   gamma: float | None, generator: torch.Generator | None = None,
                   timestep_power: float = 1.0) -> torch.Tensor:
    """Denoising loss for x0 [B,V,C,h,w]: one timestep per sample shared by its V views (`sample_timesteps`)."""
    B = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    t = sample_timesteps(B, noise_scheduler.config.num_train_timesteps, timestep_power, generator).to(x0.device)
    x_t = noise_scheduler.add_noise(x0, noise, t)
    pt = noise_scheduler.config.prediction_type
    target = noise_scheduler.get_velocity(x0, noise, t) if pt == "v_prediction" else noise
    pred = model(x_t, t, cond)
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    w = min_snr_weights(noise_scheduler.alphas_cumprod, t, gamma, pt)
    return (w * per_sample).mean()


# --- validation metrics -----------------------------------------------------------------------------------
def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per image of the RGB channels of [...,C,H,W] in [0,1]; leading dims kept."""
    mse = (a[..., :3, :, :] - b[..., :3, :, :]).pow(2).flatten(-3).mean(-1).clamp(min=1e-10)
    return -10 * torch.log10(mse)


def identity_mapping_score(generated: torch.Tensor, reference: torch.Tensor, ground_truth: torch.Tensor,
                           reference_view_idx: int = 0, collapse_margin_db: float = 0.25) -> dict[str, Any]:
    """Does the model copy its input instead of turning it?

    generated, ground_truth: [B,V,4,H,W]; reference: [B,4,H,W]; RGBA in [0,1] with RGB on white, one size.
    For every non-reference view: PSNR(generated, reference input) vs PSNR(generated, own ground truth).
    score_db = mean of (to_reference - to_ground_truth): > 0 means the generated views resemble the input
    more than the views they should be. identity_fraction: share of (sample, view) pairs closer to the input.
    `collapse` (mode collapse to the identity mapping) when most pairs are closer to the input
    (identity_fraction > 0.5) and score_db > collapse_margin_db. `gt_to_reference_db`: the same PSNR between the true
    views and the input, i.e. what a perfect model would show as its to_reference value.
    """
    B, V = generated.shape[:2]
    others = [v for v in range(V) if v != reference_view_idx]
    ref = reference[:, None].expand(-1, len(others), -1, -1, -1)
    to_ref = _psnr(generated[:, others], ref)  # [B,V-1]
    to_gt = _psnr(generated[:, others], ground_truth[:, others])
    gt_to_ref = _psnr(ground_truth[:, others], ref)
    margin = to_ref - to_gt
    score = float(margin.mean())
    return {"score_db": score, "identity_fraction": float((margin > 0).float().mean()),
            "to_reference_db": to_ref.mean(0).tolist(), "to_ground_truth_db": to_gt.mean(0).tolist(),
            "gt_to_reference_db": gt_to_ref.mean(0).tolist(), "views": others,
            "collapse": bool(score > collapse_margin_db and float((margin > 0).float().mean()) > 0.5)}


def view_quality(generated: torch.Tensor, ground_truth: torch.Tensor) -> dict[str, list[float]]:
    """Per-view generated-vs-true quality over a batch [B,V,4,H,W] (RGB on white) -> {metric: [V] means over B}.

    metrics.image_metrics: psnr_full/ssim_full over the image, *_masked weighted by the true alpha,
    mask_iou of the alphas (> 0.5).
    """
    from ..metrics import METRIC_COLUMNS, image_metrics

    B, V = generated.shape[:2]
    g, t = generated.flatten(0, 1).float(), ground_truth.flatten(0, 1).float()
    m = image_metrics(g[:, :3], g[:, 3:4], t[:, :3], t[:, 3:4])
    return {k: m[k].view(B, V).nanmean(0).tolist() for k in METRIC_COLUMNS}


def sample_grid(reference: torch.Tensor, ground_truth: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """RGB image [3, 2B*S, (V+1)*S] (inputs RGB on white): per sample [reference | true views] above
    [blank | generated views]."""
    B, V, _, S, _ = generated.shape
    rows = []
    for b in range(B):
        rows.append(torch.cat([reference[b, :3]] + [ground_truth[b, v, :3] for v in range(V)], -1))
        rows.append(torch.cat([torch.ones(3, S, S)] + [generated[b, v, :3] for v in range(V)], -1))
    return torch.cat(rows, -2)


def identity_table(validations: list[dict[str, Any]]) -> "pd.DataFrame":
    """One row per validation step: identity-mapping score, its parts (means over views) and collapse flag."""
    import pandas as pd

    rows = []
    for v in validations:
        i = v["identity"]
        rows.append({"step": v["step"], "score_db": i["score_db"], "identity_fraction": i["identity_fraction"],
                     "to_reference_db": sum(i["to_reference_db"]) / len(i["to_reference_db"]),
                     "to_ground_truth_db": sum(i["to_ground_truth_db"]) / len(i["to_ground_truth_db"]),
                     "gt_to_reference_db": sum(i["gt_to_reference_db"]) / len(i["gt_to_reference_db"]),
                     "collapse": i["collapse"]})
    return pd.DataFrame(rows)


def quality_table(validation: dict[str, Any]) -> "pd.DataFrame":
    """Per-view generated-vs-true quality of one validation entry (rows: views; mean row last)."""
    import pandas as pd

    df = pd.DataFrame(validation["quality"])
    df.index.name = "view"
    df.loc["mean"] = df.mean()
    return df


def load_validation_samples(run_dir: str | Path) -> dict[int, dict[str, torch.Tensor]]:
    """{step: {"reference" [B,4,S,S], "ground_truth" [B,V,4,S,S], "generated" [B,V,4,S,S]}} saved by validation."""
    files = sorted((Path(run_dir) / "samples").glob("step_*.pt"))
    if not files:
        raise FileNotFoundError(f"no validation samples in {Path(run_dir) / 'samples'} (train with val_every > 0)")
    out = {}
    for f in files:
        d = torch.load(f, map_location="cpu", weights_only=True)
        out[int(d["step"])] = d
    return out


def validation_panels(samples: dict[str, torch.Tensor], index: int = 0) -> tuple[torch.Tensor, list[str]]:
    """One validation sample as grid panels [2(V+1),3,S,S] (reference, true views / blank, generated views)
    with titles, for viz.image_grid(..., ncols=V+1)."""
    ref, gt, gen = samples["reference"][index], samples["ground_truth"][index], samples["generated"][index]
    V = gt.shape[0]
    panels = [ref[:3]] + [gt[v, :3] for v in range(V)] + [torch.ones_like(ref[:3])] + [gen[v, :3] for v in range(V)]
    titles = ["reference"] + [f"true {v}" for v in range(V)] + [""] + [f"generated {v}" for v in range(V)]
    return torch.stack(panels), titles


# --- the run folder (checkpoint names, resume, log: facelift_lib.training) ------------------------------------
def _rewind_samples(run_dir: Path, step: int) -> None:
    """Drop validation samples after `step`, the checkpoint a run resumes from (it redoes those steps)."""
    for sample in (run_dir / "samples").glob("step_*.*"):
        if int(sample.stem.removeprefix("step_")) > step:
            sample.unlink()


# --- model construction ---------------------------------------------------------------------------------------
def build_model(params: TrainParams) -> tuple[PixelMVDiffusion | LatentMVDiffusion, Any]:
    """(model, training noise scheduler) for `params`; init_from paths must exist."""
    from diffusers import DDPMScheduler

    if params.model == "facelift":
        if not params.init_from:
            raise ValueError("model='facelift' needs init_from = a local FaceLift pipeline folder")
        pipe = load_facelift_pipeline(params.init_from, num_views=params.num_views, mode=params.mv_attention,
                                      view_embeddings=params.view_embeddings, camera_type=params.camera_type,
                                      learn_view_embeddings=params.learn_view_embeddings)
        if pipe.model.view_embeddings is None:
            raise ValueError("model='facelift' needs view_embeddings = a [V,77,1024] file (FaceLift's "
                             "clr_embeds.pt, or per-view embeddings made for the mouse cameras)")
        model = pipe.model
        sched = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=params.prediction_type)
        if params.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
    else:
        cfg = PixelModelConfig(**{"num_views": params.num_views, "mv_attention": params.mv_attention,
                                  "camera_type": params.camera_type, **params.pixel_model})
        model = PixelMVDiffusion(cfg)
        if params.init_from:
            ckpt = read_checkpoint(params.init_from)  # an error when the path does not exist
            if ckpt["kind"] != "pixel":
                raise ValueError(f"{params.init_from}: a {ckpt['kind']} checkpoint cannot initialise a pixel model")
            load_weights(model, model_from_checkpoint(ckpt, use_ema=True, source=params.init_from).state_dict(),
                         params.init_from, "it was trained with another pixel_model (image_size, channels): set "
                         "pixel_model / image_size to the checkpoint's model_config, or train without init_from")
        sched = DDPMScheduler(num_train_timesteps=params.num_train_timesteps, beta_schedule=params.beta_schedule,
                              prediction_type=params.prediction_type, clip_sample=True)
    return model, sched


def _checkpoint_payload(model, ema, optimizer, lr_scheduler, noise_scheduler, step: int,
                        params: TrainParams) -> dict[str, Any]:
    weights = model.state_dict() if model.kind == "pixel" else model.unet.state_dict()
    return {
        # configs as plain JSON types: read_checkpoint loads with weights_only=True (no code runs on load)
        "format": CHECKPOINT_FORMAT, "kind": model.kind, "model_config": _plain(model.config_dict()),
        "camera_type": params.camera_type, "model": weights, "ema": ema.state_dict(),
        "view_embeddings": None if model.kind == "pixel" else model.view_embeddings.detach().cpu(),
        "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
        "noise_scheduler_config": stable_scheduler_config(noise_scheduler.config), "step": step,
        "params": _plain(asdict(params)),
        "rng": rng_state(),
    }


def stable_scheduler_config(config: Any) -> dict[str, Any]:
    """A diffusers scheduler config as plain JSON types whose bytes do not vary between processes: diffusers
    lists `_use_default_values` in set order (string hashing is randomised per process), so it is sorted."""
    out = _plain(dict(config))
    if isinstance(out.get("_use_default_values"), list):
        out["_use_default_values"] = sorted(out["_use_default_values"])
    return out


def _plain(value: Any) -> Any:
    """A config as JSON types (dicts, lists, numbers, strings, None): what torch.load(weights_only=True) admits."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# --- validation ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(model, noise_scheduler, batch: dict[str, torch.Tensor], params: TrainParams, step: int,
             run_dir: Path) -> dict[str, Any]:
    """Sample the validation batch with DDIM, save the grid and tensors, score identity mapping and quality."""
    ddim = sampling_scheduler(dict(noise_scheduler.config), model.kind, params.init_from)
    device = next(model.parameters()).device
    ref = batch["reference"].to(device)
    gen = sample_views(model, ddim, ref, params.val_inference_steps, params.val_guidance_scale,
                       seed=params.seed, progress=False, eta=params.val_eta).cpu()
    S = gen.shape[-1]
    gt = on_white(resize_rgba(batch["views"].flatten(0, 1), S)).view(*gen.shape)
    ref_s = on_white(resize_rgba(batch["reference"], S))
    ident = identity_mapping_score(gen, ref_s, gt, params.reference_view_idx, params.collapse_margin_db)
    entry = {"step": step, "identity": ident, "quality": view_quality(gen, gt)}
    samples = run_dir / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    write_image(samples / f"step_{step:08d}.png", sample_grid(ref_s, gt, gen))
    torch.save({"reference": ref_s, "ground_truth": gt, "generated": gen, "step": step},
               samples / f"step_{step:08d}.pt")
    return entry


# --- the loop -----------------------------------------------------------------------------------------------------
def train(params: TrainParams | dict[str, Any]) -> TrainResult:
    """Train (or resume) a multi-view diffusion model; returns the history, validations and checkpoints.

    Works in a notebook (one process, CPU or GPU) and under accelerate/torchrun (data-parallel). The run_dir
    has one writer: the first process holds its `locks.FolderLock` for the run, so a second training into the
    same run_dir fails at once naming the PID that holds it. Launched workers die with their launcher.
    """
    params = params if isinstance(params, TrainParams) else TrainParams(**params)
    if launched_worker():
        die_with_parent()  # killing torchrun / accelerate (even kill -9) must not leave workers training
    first = is_first_process()
    with FolderLock(params.run_dir, "multi-view diffusion training") if first else contextlib.nullcontext():
        return _train(params)


def _train(params: TrainParams) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    params = params if isinstance(params, TrainParams) else TrainParams(**params)
    run_dir = Path(params.run_dir)
    resume_from = resolve_resume(run_dir, params.resume, params.overwrite, "mvdiffusion")  # a wrong path fails fast
    accelerator = Accelerator(mixed_precision=params.mixed_precision,
                              gradient_accumulation_steps=params.gradient_accumulation_steps,
                              cpu=not torch.cuda.is_available())
    set_seed(params.seed, device_specific=True)
    model, noise_scheduler = build_model(params)
    main = accelerator.is_main_process

    train_set = MultiViewDataset(params.train_list, params.num_views, model.image_size, params.reference_view_idx,
                                 params.random_reference, seed=params.seed, cache=model.kind == "pixel")
    val_set = (MultiViewDataset(params.val_list, params.num_views, model.image_size, params.reference_view_idx,
                                False, cache=False) if params.val_list else None)
    if model.kind == "pixel" and model.cfg.view_prior_mice and not params.init_from:
        fill_view_prior_bank(model, train_set)  # a resumed run's checkpoint holds the same bank
    loader = DataLoader(train_set, batch_size=params.batch_size, shuffle=True,
                        drop_last=len(train_set) >= params.batch_size, num_workers=params.num_workers,
                        generator=torch.Generator().manual_seed(params.seed))
    trainable = model.trainable_parameters()
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    lr_scheduler = get_scheduler(params.lr_schedule, optimizer, num_warmup_steps=params.warmup_steps,
                                 num_training_steps=params.max_steps)
    ema = EMAModel(trainable, decay=params.ema_decay, use_ema_warmup=True)

    step = 0
    if resume_from is not None:
        ckpt = read_checkpoint(resume_from)
        if ckpt["kind"] != model.kind:
            raise ValueError(f"{resume_from}: a {ckpt['kind']} checkpoint cannot resume a {model.kind} run")
        load_weights(model if model.kind == "pixel" else model.unet, ckpt["model"], resume_from,
                     f"the run was trained with another model (see {run_dir / 'config.json'}): resume with its "
                     "pixel_model / image_size, or start over with overwrite=True or another run_dir")
        if model.kind == "latent":
            with torch.no_grad():  # in place: the optimizer holds this tensor when it is learned
                model.view_embeddings.copy_(ckpt["view_embeddings"])
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        ema.load_state_dict(ckpt["ema"])
        step = int(ckpt["step"])
        set_rng_state(ckpt["rng"])
        note("mvdiffusion", f"resumed from {resume_from} at step {step} (of max_steps {params.max_steps})")
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    ema.to(accelerator.device)
    raw = accelerator.unwrap_model(model)
    val_batch = None
    if val_set is not None and len(val_set):
        items = [val_set[i] for i in range(min(params.val_samples, len(val_set)))]
        val_batch = {k: torch.stack([it[k] for it in items]) for k in ("views", "reference")}

    history: list[dict[str, Any]] = []
    validations: list[dict[str, Any]] = []
    saved: list[Path] = []
    if main:
        if resume_from is None:
            clear_run(run_dir, extra=("samples",))  # a fresh run's log, samples and checkpoints start empty
        else:
            rewind_log(run_dir, step)
            _rewind_samples(run_dir, step)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, asdict(params))

    def run_validation() -> None:
        if val_batch is None or not main:
            return
        ema.store(trainable)
        ema.copy_to(trainable)
        raw.eval()
        entry = validate(raw, noise_scheduler, val_batch, params, step, run_dir)
        raw.train()
        ema.restore(trainable)
        validations.append(entry)
        append_log(run_dir, {"step": step, "validation": entry})
        ident = entry["identity"]
        if ident["collapse"]:
            note("mvdiffusion", f"step {step}: MODE COLLAPSE suspected: generated views are "
                 f"{ident['score_db']:.2f} dB closer to the input than to their own views "
                 f"(identity fraction {ident['identity_fraction']:.2f})")

    def save() -> None:
        if main:
            saved.append(save_checkpoint(run_dir, step, _checkpoint_payload(
                raw, ema, optimizer, lr_scheduler, noise_scheduler, step, params), params.keep_checkpoints,
                "multi-view diffusion checkpoint"))
        accelerator.wait_for_everyone()

    batches = _infinite(loader)
    if step:  # resumed: the batches the stopped run drew (one per micro-step) are drawn again, unread
        fast_forward(batches, train_set, step * params.gradient_accumulation_steps, params.batch_size,
                     in_process=params.num_workers == 0)
    since_log: list[float] = []
    raw.train()
    t_start = time.perf_counter()
    bar = tqdm(total=params.max_steps, initial=step, desc="mvdiffusion train", disable=not (main and params.progress),
               mininterval=5.0)  # a notebook keeps every refresh of the bar
    # stop_at_step ends this session early (with a checkpoint); the lr schedule still spans max_steps
    end = params.max_steps if params.stop_at_step is None else min(params.stop_at_step, params.max_steps)
    while step < end:
        batch = next(batches)
        with accelerator.accumulate(model):
            views, reference = batch["views"], batch["reference"]
            if params.random_background:
                bg = random_backgrounds(views.shape[0])
                views, reference = on_backgrounds(views, bg), on_backgrounds(reference, bg)
            with torch.no_grad():
                x0 = raw.encode_views(views)
            drop_ref, drop_clip = condition_drop_masks(x0.shape[0], raw.kind, params.cond_drop_prob)
            cond = raw.condition(reference, drop_reference=drop_ref.to(x0.device), drop_clip=drop_clip.to(x0.device))
            loss = diffusion_loss(model, noise_scheduler, x0, cond, params.min_snr_gamma,
                                  timestep_power=params.timestep_power)
            accelerator.backward(loss)
            grad_norm, reason = None, None
            if accelerator.sync_gradients:
                grad_norm = float(accelerator.clip_grad_norm_(trainable, params.grad_clip))
                loss_value = float(accelerator.reduce(loss.detach(), "mean"))  # every process decides alike
                reason = skip_reason(loss_value, grad_norm)  # a non-finite loss or gradient is not applied
            if reason is None or (reason == "nonfinite_grad" and accelerator.scaler is not None):
                optimizer.step()  # fp16: the grad scaler skips an overflowed step itself and lowers its scale
            with warnings.catch_warnings():  # after a skipped first step torch warns that optimizer.step was not called
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                lr_scheduler.step()  # the schedule follows steps, skipped or not
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        ema.step(trainable)
        step += 1
        bar.update(1)
        if reason is not None:
            entry = {"step": step, "loss": loss_value, "loss_last": loss_value, "lr": lr_scheduler.get_last_lr()[0],
                     "grad_norm": grad_norm, "skipped": True, "skip_reason": reason,
                     "elapsed_s": time.perf_counter() - t_start}
            history.append(entry)
            if main:
                append_log(run_dir, entry)
            note("mvdiffusion", f"step {step} skipped ({reason}): loss {loss_value:.4g}, grad norm {grad_norm:.4g}; "
                 "if it repeats, lower the learning rate or lengthen the warmup")
        else:
            since_log.append(loss_value)
        if since_log and (step % params.log_every == 0 or step == 1 or step == params.max_steps):
            # the mean since the last entry: one batch's loss swings with its random timesteps
            entry = {"step": step, "loss": sum(since_log) / len(since_log), "loss_last": loss_value,
                     "lr": lr_scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                     "elapsed_s": time.perf_counter() - t_start}
            since_log.clear()
            history.append(entry)
            if main:
                append_log(run_dir, entry)
                bar.set_postfix(loss=f"{loss_value:.4f}")
        if params.val_every and (step % params.val_every == 0 or step == params.max_steps):
            run_validation()
        if step % params.checkpoint_every == 0 or step == end:
            save()
    bar.close()
    if step < params.max_steps:
        note("mvdiffusion", f"stop_at_step={params.stop_at_step}: stopped with a checkpoint at step {step} of "
             f"max_steps {params.max_steps}; resume='latest' continues")
    last = saved[-1] if saved else (list_checkpoints(run_dir)[-1] if list_checkpoints(run_dir) else None)
    return TrainResult(run_dir=run_dir, history=history, validations=validations, checkpoints=saved,
                       last_checkpoint=last)


def read_steps_and_validations(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training entries, validation entries) of a run's log.jsonl (`training.read_log`: all sessions, resumes
    included)."""
    steps, vals = [], []
    for entry in read_log(run_dir):
        (vals.append(entry["validation"]) if "validation" in entry else steps.append(entry))
    return steps, vals


# The research recipe for fine-tuning FaceLift's UNet on mouse views (2e-5 exploded; 5e-6 + 500 warmup held).
# A FaceLift checkpoint (UNet + EMA + AdamW state) is ~14 GB, hence few kept and far apart.
# Conditioning and validation sampling are FaceLift's (3 drop cases of 5 %, random backgrounds; 50 DDIM steps,
# eta 1, guidance 3).
FACELIFT_FINETUNE: dict[str, Any] = dict(lr=5e-6, warmup_steps=500, lr_schedule="constant_with_warmup",
                                         batch_size=1, gradient_checkpointing=True, ema_decay=0.9999,
                                         max_steps=20000, checkpoint_every=2000, keep_checkpoints=2, val_every=500,
                                         val_inference_steps=50, val_guidance_scale=3.0, val_eta=1.0,
                                         cond_drop_prob=0.05, random_background=True, mixed_precision="bf16",
                                         min_snr_gamma=5.0)  # unchanged for FaceLift's UNet (not measured there)
# Fine-tuning the shipped small model (weights/, `init_weights`) on a profile's data: the demo shows training
# and a working model. Its width ([24,48,96,96]) costs ~2x the from-scratch smoke model ([16,32,64,64]) per
# training step and per validation (measured 1.9-2.1x), so the smoke run takes 150 steps (not 200) and 3
# validations: notebook 03 took 234 s against 180 s from scratch on the same (loaded) machine.
SHIPPED_FINETUNE: dict[str, Any] = dict(lr=2e-4, warmup_steps=10, lr_schedule="cosine", max_steps=150)
NOTEBOOK_SECTION = "03_mvdiffusion"


def profile_train_params(out_dir: str | Path, seed: int = 0, facelift_pipeline: str | None = None,
                         view_embeddings: str | None = None, image_size: int | None = None,
                         init_weights: str | None = "shipped", overrides: dict[str, Any] | None = None
                         ) -> TrainParams:
    """TrainParams of a workbook profile: paths under out_dir/mvdiffusion/, then the recipe, then `overrides`.

    Recipe, by what training starts from:
    - `init_weights` (default "shipped": weights/mvdiffusion_demo.pt, sha256-checked; or a manifest entry
      name): the shipped small pixel model fine-tuned with `SHIPPED_FINETUNE`; its model config is the
      manifest's (an `image_size` or an override of `pixel_model` / `init_from` that differs is an error);
    - `init_weights=None`: the small pixel model from scratch (TrainParams defaults; image_size sets its
      resolution);
    - `facelift_pipeline` (a local folder; then init_weights must be None): FaceLift's UNet fine-tuned with
      `FACELIFT_FINETUNE`.
    Used by notebook 03 and by the CLI (`params_from_yaml`), so both train the same thing; the defaults are
    notebook 03's.
    """
    root = Path(out_dir) / "mvdiffusion"
    fields: dict[str, Any] = dict(run_dir=str(root / "run"), train_list=str(root / "data" / "train.txt"),
                                  val_list=str(root / "data" / "val.txt"), seed=seed)
    overrides = dict(overrides or {})
    _check_field_names(overrides)
    if facelift_pipeline is not None and init_weights is not None:
        raise ValueError(f"facelift_pipeline={str(facelift_pipeline)!r} and init_weights={init_weights!r} both say "
                         "what training starts from: set init_weights=None (null in a profile) to fine-tune "
                         "FaceLift's UNet, or facelift_pipeline=None to fine-tune the shipped small model")
    if facelift_pipeline is not None:
        fields.update(FACELIFT_FINETUNE, model="facelift", init_from=str(facelift_pipeline),
                      view_embeddings=None if view_embeddings is None else str(view_embeddings))
    elif init_weights is not None:
        from ..weights import shipped_start

        path, config = shipped_start(init_weights, "mvdiffusion")
        fields.update(SHIPPED_FINETUNE, init_from=str(path), pixel_model=config)
        _check_shipped_start(path, config, image_size, overrides)
    elif image_size is not None:
        fields["pixel_model"] = {"image_size": int(image_size)}
    fields.update(overrides)
    return TrainParams(**fields)


def _check_shipped_start(path: Path, config: dict[str, Any], image_size: int | None,
                         overrides: dict[str, Any]) -> None:
    """A profile that fine-tunes shipped weights must not also ask for another model or another start."""
    fix = "or set init_weights=None (null in a profile) to train the small model from scratch"
    if image_size is not None and int(image_size) != config["image_size"]:
        raise ValueError(f"image_size={image_size} but the shipped weights {path} are a {config['image_size']}² "
                         f"model: set image_size={config['image_size']}, {fix}")
    if "pixel_model" in overrides and overrides["pixel_model"] != config:
        raise ValueError(f"train_overrides pixel_model={overrides['pixel_model']} differs from the shipped weights' "
                         f"model_config {config} ({path}): drop the override, {fix}")
    if overrides.get("init_from") not in (None, str(path)):
        raise ValueError(f"train_overrides init_from={overrides['init_from']!r} and init_weights (the shipped "
                         f"{path}) both say what training starts from: drop one")


def params_from_yaml(path: str | Path) -> TrainParams:
    """TrainParams from a workbook profile YAML (params/*.yaml, `training.read_profile_section`): its out_dir and
    seed, and from its `03_mvdiffusion:` section the keys notebook 03 takes for training: facelift_pipeline,
    view_embeddings, image_size, init_weights (absent: notebook 03's default, "shipped") and train_overrides
    (TrainParams fields). The section's other keys are the notebook's."""
    profile = read_profile_section(path, NOTEBOOK_SECTION)
    keys = profile.keys
    start = {"init_weights": keys["init_weights"]} if "init_weights" in keys else {}
    return profile_train_params(profile.out_dir, seed=profile.seed, facelift_pipeline=keys.get("facelift_pipeline"),
                                view_embeddings=keys.get("view_embeddings"), image_size=keys.get("image_size"),
                                overrides=keys.get("train_overrides"), **start)


def recipe_params(path: str | Path) -> TrainParams:
    """TrainParams from a flat YAML of its fields (a shipped model's recipe); an unknown key is an error."""
    import yaml

    fields = yaml.safe_load(Path(path).read_text()) or {}
    _check_field_names(fields, f"{path}: ")
    return TrainParams(**fields)


def _check_field_names(fields: dict[str, Any], where: str = "") -> None:
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(TrainParams)})
    if unknown:
        raise KeyError(f"{where}unknown TrainParams fields {unknown}")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Train multi-view diffusion (accelerate/torchrun-launchable).")
    ap.add_argument("params", help="profile YAML (params/full.yaml): out_dir, seed and its 03_mvdiffusion section; "
                                   "with --recipe, a flat YAML of TrainParams fields (weights/recipes/*.yaml)")
    ap.add_argument("--recipe", action="store_true", help="params is a flat TrainParams YAML, not a profile")
    args = ap.parse_args(argv)
    result = train(recipe_params(args.params) if args.recipe else params_from_yaml(args.params))
    print(f"last checkpoint: {result.last_checkpoint}")


if __name__ == "__main__":
    main()
