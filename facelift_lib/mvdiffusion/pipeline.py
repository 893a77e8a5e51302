"""Sampling (DDIM + classifier-free guidance), loading a local FaceLift diffusers folder, and turning a
training checkpoint back into a pipeline. Nothing here downloads anything: every path is local and a
missing one is an error that names it.

Sampler defaults are FaceLift's inference settings (its inference.py / gradio_app.py): DDIM with eta 1.0
(stochastic, every draw from the one seeded generator: embedding noise, initial latents, then one variance
noise per step), 50 steps, guidance 3.0, and classifier-free guidance whenever guidance != 1.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .model import LatentMVDiffusion, PixelModelConfig, PixelMVDiffusion, set_multiview_attention

# FaceLift's inference sampler settings (pinned by tests/test_facelift_parity.py and the fixtures' README).
FACELIFT_NUM_INFERENCE_STEPS = 50
FACELIFT_GUIDANCE_SCALE = 3.0
FACELIFT_ETA = 1.0
# Subfolders of a FaceLift multi-view diffusion pipeline folder (diffusers save_pretrained layout).
FACELIFT_COMPONENTS = ("unet", "vae", "image_encoder", "feature_extractor", "image_normalizer",
                       "image_noising_scheduler", "scheduler")
# FaceLift saves its UNet under its own class/block names; the weights are key-for-key the stock ones.
_MV_BLOCK_NAMES = {"CrossAttnDownBlockMV2D": "CrossAttnDownBlock2D", "CrossAttnUpBlockMV2D": "CrossAttnUpBlock2D",
                   "UNetMidBlockMV2DCrossAttn": "UNetMidBlock2DCrossAttn"}
CHECKPOINT_FORMAT = "facelift_lib.mvdiffusion/1"


@dataclass
class MVDiffusionPipeline:
    """A multi-view denoiser plus its sampling scheduler: `pipe(reference [B,4,H,W]) -> views [B,V,4,S,S]`."""

    model: PixelMVDiffusion | LatentMVDiffusion
    scheduler: Any  # diffusers DDIMScheduler
    camera_type: str = "mouse_standard_6view"
    source: str | None = None  # the checkpoint file or pipeline folder it was loaded from (provenance)

    @torch.no_grad()
    def __call__(self, reference: torch.Tensor, num_inference_steps: int = FACELIFT_NUM_INFERENCE_STEPS,
                 guidance_scale: float = FACELIFT_GUIDANCE_SCALE, seed: int = 0, progress: bool = True,
                 eta: float = FACELIFT_ETA, strength: float = 1.0) -> torch.Tensor:
        return sample_views(self.model, self.scheduler, reference, num_inference_steps, guidance_scale, seed, progress,
                            eta=eta, strength=strength)


def sample_shape(model: PixelMVDiffusion | LatentMVDiffusion, batch: int) -> tuple[int, ...]:
    """[B,V,C,h,w] of the model's diffusion space (pixels or latents)."""
    cfg = model.unet.config
    return (batch, model.num_views, cfg.out_channels, cfg.sample_size, cfg.sample_size)


def _cat_cond(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def guided_prediction(uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance, FaceLift's formula: uncond + w (cond - uncond)."""
    return uncond + guidance_scale * (cond - uncond)


def uses_guidance(guidance_scale: float) -> bool:
    """FaceLift runs the unconditional branch whenever the guidance scale is not 1 (w < 1 included)."""
    return guidance_scale != 1.0


def with_null_condition(model: PixelMVDiffusion | LatentMVDiffusion, cond: dict[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor]:
    """The CFG batch's condition: [null condition of each sample; its condition] (FaceLift's [uncond; cond])."""
    return _cat_cond(model.null_condition(cond), cond)


def denoiser_output(model: PixelMVDiffusion | LatentMVDiffusion, x: torch.Tensor, t: torch.Tensor,
                    cond: dict[str, torch.Tensor], guidance_scale: float) -> torch.Tensor:
    """The model output the sampler steps with: x [B,V,C,h,w], t [B]; with guidance (`uses_guidance`),
    `cond` is `with_null_condition(...)` (2B rows) and the result is the guided prediction."""
    if not uses_guidance(guidance_scale):
        return model(x, t, cond)
    out_u, out_c = model(torch.cat([x, x]), torch.cat([t, t]), cond).chunk(2)
    return guided_prediction(out_u, out_c, guidance_scale)


def ddim_step(scheduler: Any, model_output: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor, eta: float,
              generator: torch.Generator | None = None, variance_noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step x_t -> x_prev with diffusers' DDIMScheduler: eta 0 is deterministic, eta 1 (FaceLift)
    adds σ_t·noise, the noise drawn from `generator` (on the CPU, then moved) unless `variance_noise` is given.
    Tensors [B,V,C,h,w] or [N,C,h,w]."""
    if eta > 0 and variance_noise is None:
        variance_noise = torch.randn(model_output.shape, generator=generator).to(model_output)
    return scheduler.step(model_output, t, x, eta=eta, variance_noise=variance_noise).prev_sample


@torch.no_grad()
def sample_views(model: PixelMVDiffusion | LatentMVDiffusion, scheduler: Any, reference: torch.Tensor,
                 num_inference_steps: int = FACELIFT_NUM_INFERENCE_STEPS,
                 guidance_scale: float = FACELIFT_GUIDANCE_SCALE, seed: int = 0, progress: bool = True,
                 eta: float = FACELIFT_ETA, strength: float = 1.0) -> torch.Tensor:
    """Generate V views from reference RGBA images [B,4,H,W] in [0,1] -> RGBA [B,V,4,S,S] in [0,1].

    All views of a sample share the timestep (the UNet denoises them jointly through multi-view
    attention). guidance_scale != 1 runs classifier-free guidance against the null condition (FaceLift's:
    zero reference, all-zero class label). One CPU generator seeded with `seed` draws, in FaceLift's order,
    the embedding noise, the initial noise and (eta > 0) each step's variance noise: deterministic per seed.

    strength < 1 (a model with a retrieval prior only) starts from the prior's views (`prior_views`) noised to
    that fraction of the schedule and runs only the remaining steps (SDEdit; diffusers' img2img `strength`):
    the sampler refines the retrieved silhouettes instead of drawing them from pure noise. 1 is FaceLift's.
    """
    device = next(model.unet.parameters()).device
    gen = torch.Generator("cpu").manual_seed(int(seed))
    reference = reference.to(device)
    cond = model.condition(reference, generator=gen)
    start = prior_views(model, cond) if strength < 1.0 else None  # before CFG doubles the batch
    if uses_guidance(guidance_scale):
        cond = with_null_condition(model, cond)
    B = reference.shape[0]
    x = torch.randn(sample_shape(model, B), generator=gen).to(device) * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps[num_inference_steps - strength_steps(num_inference_steps, strength):]
    if start is not None:
        x = scheduler.add_noise(start, x, timesteps[:1])
    for t in tqdm(timesteps, desc="DDIM", leave=False, disable=not progress):
        inp = scheduler.scale_model_input(x, t)
        out = denoiser_output(model, inp, t.reshape(1).expand(B).to(device), cond, guidance_scale)
        x = ddim_step(scheduler, out, t, x, eta, generator=gen)
    return model.decode_views(x)


def sampler_label(num_inference_steps: int, guidance_scale: float, eta: float, seed: int,
                  strength: float = 1.0) -> str:
    """How views were sampled, for a protocol's `extra` (numbers from two samplers must not be compared)."""
    label = f"DDIM {num_inference_steps} steps, guidance {guidance_scale:g}, eta {eta:g}, seed {seed}"
    if strength == 1.0:
        return label
    return label + (f", from the retrieval prior at strength {strength:g} "
                    f"({strength_steps(num_inference_steps, strength)} steps run)")


def strength_steps(num_inference_steps: int, strength: float) -> int:
    """How many of the schedule's steps a start at `strength` runs (at least one)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"sample_views: strength {strength} must be in (0, 1] (1: start from pure noise)")
    return max(1, round(num_inference_steps * strength))


def prior_views(model: PixelMVDiffusion | LatentMVDiffusion, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's condition of a batch (`model.condition(reference)`: the encoded reference and its retrieved
    views) -> x0 [B,V,4,S,S] in model space, the views a prior-started sampler refines: view 0 the reference
    itself; every other view its retrieved mean alpha filled with the reference's mean mouse colour, on white."""
    if "view_prior" not in cond:
        raise ValueError("sample_views: strength < 1 starts from the retrieval prior, which this model has none of "
                         "(PixelModelConfig.view_prior_mice = 0); sample with strength 1")
    ref = cond["reference"]  # [B,4,S,S] model space
    ref_alpha = (ref[:, 3:] + 1) / 2  # [B,1,S,S]
    on_white_rgb = (ref[:, :3] + 1) / 2  # = alpha * colour + (1 - alpha)
    colour = (on_white_rgb - (1 - ref_alpha)).sum((2, 3)) / ref_alpha.sum((2, 3)).clamp_min(1e-6)  # [B,3]
    alpha = (cond["view_prior"] + 1) / 2  # [B,V,1,S,S]
    rgb = alpha * colour[:, None, :, None, None].clamp(0, 1) + (1 - alpha)
    x0 = torch.cat([rgb, alpha], 2) * 2 - 1
    x0[:, 0] = ref
    return x0


# --- FaceLift diffusers folder ----------------------------------------------------------------------------
def _check_component_dirs(local_dir: Path) -> None:
    if not local_dir.is_dir():
        raise FileNotFoundError(f"FaceLift pipeline folder not found: {local_dir} (a local diffusers folder with "
                                f"{', '.join(FACELIFT_COMPONENTS)}; nothing is downloaded)")
    missing = [c for c in FACELIFT_COMPONENTS if not (local_dir / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"{local_dir}: missing pipeline component folder(s) {missing}; a FaceLift "
                                f"multi-view pipeline needs {list(FACELIFT_COMPONENTS)}")


def stock_unet_config(config: dict[str, Any]) -> dict[str, Any]:
    """A UNet config.json (stock or FaceLift's UNetMV2DConditionModel) -> block names of the stock UNet."""
    out = dict(config)
    for key in ("down_block_types", "up_block_types"):
        out[key] = [_MV_BLOCK_NAMES.get(b, b) for b in config[key]]
    out["mid_block_type"] = _MV_BLOCK_NAMES.get(config.get("mid_block_type"), config.get("mid_block_type"))
    return out


def load_facelift_unet(unet_dir: str | Path, torch_dtype: torch.dtype = torch.float32):
    """Stock `UNet2DConditionModel` from a local unet folder, also when the folder was saved by FaceLift's
    multi-view class (its block names are translated; the weights load strictly)."""
    from diffusers import UNet2DConditionModel

    unet_dir = Path(unet_dir)
    cfg_path = unet_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"UNet config not found: {cfg_path}")
    cfg = stock_unet_config(json.loads(cfg_path.read_text()))
    overrides = {k: cfg[k] for k in ("down_block_types", "up_block_types", "mid_block_type")}
    return UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=torch_dtype, low_cpu_mem_usage=False,
                                                **overrides)


def load_facelift_pipeline(local_dir: str | Path, num_views: int = 6, mode: str = "sparse",
                           view_embeddings: str | Path | torch.Tensor | None = None, device: str = "cpu",
                           torch_dtype: torch.dtype = torch.float32, camera_type: str = "facelift_standard",
                           noise_level: int = 0, learn_view_embeddings: bool = False) -> MVDiffusionPipeline:
    """Build FaceLift's multi-view pipeline from a local diffusers folder and install our multi-view attention.

    local_dir holds unet, vae, image_encoder, feature_extractor, image_normalizer, image_noising_scheduler
    and scheduler (save_pretrained layout). view_embeddings: [V,77,1024] tensor or file (FaceLift's are
    clr_embeds.pt); without them the pipeline loads but sampling/training raise until
    `pipe.model.set_view_embeddings(...)` is called. camera_type names the views' camera spec
    (FaceLift's own: facelift_standard; a mouse fine-tune: mouse_standard_6view). learn_view_embeddings
    makes the embeddings trainable parameters (initialised from the given ones).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    # the PIL processor: what FaceLift's transformers (4.44) ran; pinned, so a torchvision install cannot
    # swap in the torchvision backend (whose resize differs slightly)
    from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

    local_dir = Path(local_dir)
    _check_component_dirs(local_dir)
    unet = load_facelift_unet(local_dir / "unet", torch_dtype)
    vae = AutoencoderKL.from_pretrained(local_dir / "vae", torch_dtype=torch_dtype)
    latent_ch = vae.config.latent_channels
    if unet.config.in_channels != 2 * latent_ch or unet.config.out_channels != latent_ch:
        raise ValueError(f"{local_dir / 'unet'}: in_channels={unet.config.in_channels}, out_channels="
                         f"{unet.config.out_channels}; a FaceLift multi-view UNet takes noisy + reference latents "
                         f"({2 * latent_ch}) and predicts {latent_ch} (is this a stock sd-2-1-unclip UNet?)")
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(local_dir / "image_encoder", torch_dtype=torch_dtype)
    feature_extractor = CLIPImageProcessorPil.from_pretrained(local_dir / "feature_extractor")
    image_normalizer = StableUnCLIPImageNormalizer.from_pretrained(local_dir / "image_normalizer",
                                                                   torch_dtype=torch_dtype)
    noising = DDPMScheduler.from_pretrained(local_dir / "image_noising_scheduler")
    scheduler = DDIMScheduler.from_pretrained(local_dir / "scheduler")
    set_multiview_attention(unet, num_views, mode)
    model = LatentMVDiffusion(unet, vae, image_encoder, feature_extractor, image_normalizer, noising,
                              num_views=num_views, noise_level=noise_level, learn_view_embeddings=learn_view_embeddings,
                              source=str(local_dir.resolve()))
    if view_embeddings is not None:
        model.set_view_embeddings(view_embeddings)
    model.eval().to(device)
    return MVDiffusionPipeline(model=model, scheduler=scheduler, camera_type=camera_type,
                               source=str(local_dir.resolve()))


# --- training checkpoints -> pipelines ----------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `train.train`; a missing or foreign file is an error (never the base model)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multi-view diffusion checkpoint not found: {path} (train one with "
                                "facelift_lib.mvdiffusion.train / notebook 03_mvdiffusion, or fix the path)")
    # weights_only: tensors and plain types only, so a crafted file cannot run code (train.py stores configs as
    # plain dicts and RNG state as tensors for this).
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused: the checkpoint holds objects other than tensors and plain types "
                         f"({str(e).splitlines()[0][:200]}); loading it could run code. Only load checkpoints "
                         "written by facelift_lib.mvdiffusion.train; re-train or re-save it") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         "the file is truncated or corrupt (an interrupted copy?): copy it again or use another "
                         "checkpoint of the run") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (keys: "
                         f"{sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return ckpt


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path, fix: str) -> None:
    """module.load_state_dict(state), strictly; a mismatch (another size, another model) is a ValueError naming
    `source`, the first mismatches and `fix` (what to do)."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        found = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("Error(s)")][:3]
        raise ValueError(f"{source}: the checkpoint's weights do not fit the model ({' '.join(found)[:500]}); "
                         f"{fix}") from e


def model_from_checkpoint(ckpt: dict[str, Any], use_ema: bool = True,
                          source: str | Path = "checkpoint") -> PixelMVDiffusion | LatentMVDiffusion:
    """Rebuild the model a checkpoint was trained as and load its (EMA by default) weights; `source` (the file)
    names it in errors."""
    cfg = ckpt["model_config"]
    fix = "the file does not match its own model_config (corrupt or edited?): use another checkpoint of the run"
    if ckpt["kind"] == "pixel":
        model: PixelMVDiffusion | LatentMVDiffusion = PixelMVDiffusion(
            PixelModelConfig(**{**cfg, "block_out_channels": tuple(cfg["block_out_channels"])}))
        load_weights(model, ckpt["model"], source, fix)
    elif ckpt["kind"] == "latent":
        pipe = load_facelift_pipeline(cfg["source"], num_views=cfg["num_views"], mode=cfg["mv_attention"],
                                      noise_level=cfg["noise_level"],
                                      learn_view_embeddings=cfg.get("learn_view_embeddings", False))
        model = pipe.model
        load_weights(model.unet, ckpt["model"], source,
                     f"it was fine-tuned from another pipeline than {cfg['source']}: point model_config.source at "
                     "the pipeline folder it was trained from")
        if ckpt.get("view_embeddings") is not None:
            model.set_view_embeddings(ckpt["view_embeddings"])
    else:
        raise ValueError(f"unknown checkpoint kind {ckpt['kind']!r}")
    if use_ema and not ckpt.get("ema_applied"):  # shipped weights (weights.ship) hold the EMA weights as "model"
        if ckpt.get("ema") is None:
            raise ValueError("checkpoint has no EMA weights; load with use_ema=False")
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.trainable_parameters())
        ema.load_state_dict(ckpt["ema"])
        ema.copy_to(model.trainable_parameters())
    return model.eval()


def sampling_scheduler(noise_scheduler_config: dict[str, Any], kind: str, source: str | Path | None = None) -> Any:
    """The DDIM sampler for a trained model.

    kind "latent" (a fine-tuned FaceLift UNet): the FaceLift pipeline folder's own `scheduler` (`source`),
    unchanged, as FaceLift samples ("leading" spacing, set_alpha_to_one false; a DDPM round trip of the
    config would lose the latter). kind "pixel" (our small model): DDIM on its training schedule with
    "trailing" spacing (the first step starts at t = T-1: better samples in few steps).
    """
    from diffusers import DDIMScheduler

    if kind == "latent":
        if source is None:
            raise ValueError("sampling_scheduler: a latent (FaceLift) model needs `source`, its pipeline folder")
        folder = Path(source) / "scheduler"
        if not folder.is_dir():
            raise FileNotFoundError(f"FaceLift scheduler folder not found: {folder} (the pipeline folder the model "
                                    "was fine-tuned from must still exist there)")
        return DDIMScheduler.from_pretrained(folder)
    return DDIMScheduler.from_config(noise_scheduler_config, timestep_spacing="trailing")


def load_checkpoint_pipeline(path: str | Path, use_ema: bool = True, device: str = "cpu") -> MVDiffusionPipeline:
    """Pipeline (model + DDIM scheduler with the training noise schedule) from a `train.train` checkpoint."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, use_ema, source=path).to(device)
    scheduler = sampling_scheduler(ckpt["noise_scheduler_config"], ckpt["kind"], ckpt["model_config"].get("source"))
    return MVDiffusionPipeline(model=model, scheduler=scheduler, camera_type=ckpt["camera_type"],
                               source=str(Path(path).resolve()))


# --- a tiny random FaceLift-layout folder (tests, CPU dry runs of the full-profile code path) ---------------
def write_tiny_facelift_pipeline(out_dir: str | Path, image_size: int = 32, cross_attention_dim: int = 32,
                                 facelift_block_names: bool = False, seed: int = 0) -> Path:
    """Write a randomly initialised pipeline folder with FaceLift's components and layout, tiny sizes.

    Same component classes and save_pretrained layout as FaceLift's multi-view pipeline (UNet in 8 /
    out 4 with a projection class embedding of [CLIP embedding, noise-level embedding], AutoencoderKL,
    CLIPVisionModelWithProjection, CLIPImageProcessor, StableUnCLIPImageNormalizer, DDPM noising scheduler,
    DDIM scheduler). facelift_block_names writes the UNet config under FaceLift's multi-view class and block
    names, as FaceLift's own checkpoints are saved. Not a model: a fixture for code paths.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    clip_dim = 16
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=8, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=2, norm_num_groups=8, use_linear_projection=True,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * clip_dim)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=image_size)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=clip_dim))
    components = {
        "unet": unet, "vae": vae, "image_encoder": encoder,
        "feature_extractor": CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        "image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=clip_dim),
        "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        "scheduler": DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False),
    }
    for name, comp in components.items():
        comp.save_pretrained(out_dir / name)
    if facelift_block_names:
        cfg_path = out_dir / "unet" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        inverse = {v: k for k, v in _MV_BLOCK_NAMES.items()}
        cfg["_class_name"] = "UNetMV2DConditionModel"
        cfg["down_block_types"] = [inverse.get(b, b) for b in cfg["down_block_types"]]
        cfg["up_block_types"] = [inverse.get(b, b) for b in cfg["up_block_types"]]
        cfg["mid_block_type"] = inverse.get(cfg["mid_block_type"], cfg["mid_block_type"])
        cfg.update(num_views=6, multiview_attention=True, sparse_mv_attention=True, selfattn_block="custom")
        cfg_path.write_text(json.dumps(cfg, indent=1))
    return out_dir
