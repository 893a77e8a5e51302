"""One GS-LRM trainer for the notebook and for torchrun.

    from facelift_lib.gslrm.train import train, TrainConfig
    result = train(TrainConfig(train_list=..., run_dir=..., model=dict(d=128, n_layers=4, n_heads=4)))

    torchrun --nproc_per_node 8 -m facelift_lib.gslrm.train params/full.yaml

The same `train()` runs in both: under torchrun (WORLD_SIZE > 1) it wraps the model in DDP, shards
the data with DistributedSampler, and only rank 0 logs and writes checkpoints.

What it does, and why (the mouse domain broke FaceLift's defaults):
- fixed view order: views[:num_input_views] are inputs, the rest are supervised (inputs too, optionally);
- losses on renders of the predicted gaussians: L2 and SSIM (clamped to [0,1]) masked by the target
  alpha (the mouse is a few % of the pixels; unmasked losses learn a white image), an L1 alpha loss
  (keeps the background empty, drives Mask IoU), LPIPS only with local weights (default weight 0);
- AdamW (betas 0.9/0.95, weight decay on >=2-D params only), linear warmup + cosine, bf16 autocast on
  CUDA, gradient clipping; a step with a non-finite loss or gradient, or a gradient norm above
  `skip_grad_norm`, is not applied and is logged as skipped (with the reason);
- fine-tuning modes: full, freeze_transformer (heads only), lora (peft LoRA on the transformer's linear
  layers, plus the heads unless lora_train_heads=False);
- the run folder is `facelift_lib.training`'s (shared with the diffusion trainer): checkpoints
  `run_dir/checkpoints/ckpt_{step:016d}.pt`, written atomically, in FaceLift's structure ({"model",
  "optimizer", "lr_scheduler", "fwdbwd_pass_step", "param_update_step"}; "model" always holds plain
  FaceLift-named weights, LoRA merged in) plus "rng", "train_config", "model_config" and, for LoRA,
  "lora_adapter"; `resume` None / "latest" / a path and `overwrite` as `training.resolve_resume` says;
  `init_from` starts from a FaceLift checkpoint or shipped weights (weights/gslrm_demo_128.pt, notebook 05's
  default through `profile_train_config(init_weights="shipped")`) with fresh training state;
- a JSON-lines log `run_dir/log.jsonl` (one line per step: loss terms, grad norm, skipped, lr,
  step time), `run_dir/config.json`, and a tqdm bar; what a user must see is printed (`training.note`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from ..io import check_number_fields, read_list_file
from ..locks import FolderLock, die_with_parent, launched_worker
from ..gaussians import rotation_z
from ..metrics import make_lpips, render_views, ssim_map
from ..protocol import split_views
from ..training import (append_log, check_resume, checkpoint_file, clear_run, is_first_process, note, read_log,
                        read_profile_section, resolve_resume, rewind_log, rng_state,
                        save_checkpoint, set_rng_state, skip_reason, write_config)
from .data import ViewsDataset, collate
from .model import (GSLRM, CheckpointError, GSLRMConfig, check_state_dict, double_resolution, model_from_checkpoint,
                    model_state_from_checkpoint, read_checkpoint)

FINETUNE_MODES = ("full", "freeze_transformer", "lora")
LORA_TARGETS = r"transformer_layers\.\d+\.(attn\.to_qkv|attn\.fc|mlp\.mlp\.0|mlp\.mlp\.2)"


def training_samples(train_list: str | Sequence[str]) -> str | list[Path]:
    """One list file as it is (the dataset names it), or the samples of several list files, in order."""
    if isinstance(train_list, (str, Path)):
        return str(train_list)
    return [d for f in train_list for d in read_list_file(f)]


@dataclass
class TrainConfig:
    """Every knob of a GS-LRM run, in one place (YAML/dict keys are these field names).

    Defaults train the small CPU smoke model; `model` holds GSLRMConfig fields and `model={}` is the
    FaceLift size (needed for `init_from` a FaceLift checkpoint). On a GPU set views_per_step=None and
    background_gaussian_fraction=1.0 (render everything, as FaceLift does).
    """

    train_list: str | list[str] = "outputs/smoke/data/train.txt"  # one list file or several (their samples
                                      # concatenated); paths relative to the working directory (repo root)
    run_dir: str = "outputs/smoke/gslrm/run"
    # data
    image_size: int = 64              # square side the views are resized to (intrinsics scaled)
    num_views: int = 6
    num_input_views: int = 5
    supervise_input_views: bool = True
    views_per_step: int | None = None  # render this many supervised views per step: held-out first, then
                                       # random inputs (CPU speed); None = all
    background_gaussian_fraction: float = 1.0  # <1: render only this random fraction of the gaussians of
                                       # background input pixels (CPU speed; evaluation renders all)
    shuffle_views: bool = False       # augmentation: a random view order per sample and step (default: fixed)
    random_yaw: bool = False          # augmentation: turn each sample's world by a random angle about Z (up);
                                      # exact: the cameras turn with it, the pixels do not change
    background: str = "white"
    validate_data: bool = True
    # model
    model: dict = field(default_factory=lambda: dict(image_size=64, d=128, n_layers=4, n_heads=4))
    init_from: str | None = None      # FaceLift ckpt_*.pt or shipped weights; weights only, training state fresh
    init_double_resolution: bool = False  # init_from's model at twice its resolution (`model.double_resolution`)
    finetune: str = "full"            # full | freeze_transformer | lora
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_train_heads: bool = True
    # losses
    l2_weight: float = 1.0
    ssim_weight: float = 0.5
    alpha_weight: float = 0.5
    lpips_weight: float = 0.0
    lpips_weights: str | None = None  # local torch-hub folder for LPIPS (see metrics.make_lpips)
    masked_losses: bool = True        # L2/SSIM weighted by the target alpha
    # optimisation
    lr: float = 4e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 50
    max_steps: int = 500
    min_lr_ratio: float = 0.0
    batch_size: int = 1
    grad_clip: float = 1.0
    skip_grad_norm: float = 200.0     # steps whose pre-clip gradient norm exceeds this are not applied
    bf16: bool = True                 # bf16 autocast for the transformer on CUDA (ignored on CPU)
    # run
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    resume: str | None = None         # None (fresh) | "latest" (newest checkpoint if any) | a checkpoint path
    overwrite: bool = False           # a fresh start in a run_dir with checkpoints deletes them (else an error)
    max_wall_s: float | None = None   # stop after this many seconds of training in this process (a checkpoint
                                      # is written; resume="latest" continues): runs that must end by a deadline
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        check_number_fields(self)  # max_steps="40" from a YAML fails here, naming the field
        check_resume(self.resume, self.overwrite, "TrainConfig")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"TrainConfig.finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
        if not 0 < self.num_input_views <= self.num_views:
            raise ValueError(f"TrainConfig: num_input_views must be in 1..num_views={self.num_views}, "
                             f"got {self.num_input_views}")
        if self.num_input_views == self.num_views and not self.supervise_input_views:
            raise ValueError("TrainConfig: all views are inputs and supervise_input_views=False: nothing to supervise")
        if self.finetune != "full" and self.init_from is None:
            raise ValueError(f"TrainConfig: finetune={self.finetune!r} adapts pretrained weights, but init_from is None "
                             "(the transformer would stay at its random init); give init_from a FaceLift ckpt_*.pt, "
                             "or train from scratch with finetune='full'")
        if self.init_double_resolution and self.init_from is None:
            raise ValueError("TrainConfig: init_double_resolution doubles init_from's model, but init_from is None")
        if self.lpips_weight > 0 and self.lpips_weights is None:
            raise ValueError("TrainConfig: lpips_weight > 0 needs lpips_weights, a LOCAL folder with the LPIPS "
                             "backbone weights (nothing can be downloaded here); set lpips_weight=0 otherwise")
        self.model = dict(self.model)
        GSLRMConfig(**self.model)  # unknown or inconsistent model keys fail here, not mid-run

    def model_config(self) -> GSLRMConfig:
        return GSLRMConfig(**self.model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Where 05_gslrm's training data comes from: data_source -> (folder under out_dir, the notebook writing it).
DATA_SOURCES = {"preprocessed": ("data", "02_preprocessing"), "synthetic": ("synthetic", "04_synthetic")}


def dataset_lists(out_dir: str | Path, data_source: str = "preprocessed") -> dict[str, Path]:
    """{"train", "val"} list files of a run's dataset (DATA_SOURCES names the notebook writing them; notebook 05
    checks them with `workbook.require`, the trainer's dataset when it reads them)."""
    if data_source not in DATA_SOURCES:
        raise ValueError(f"data_source must be one of {list(DATA_SOURCES)}, got {data_source!r}")
    folder, _ = DATA_SOURCES[data_source]
    return {split: Path(out_dir) / folder / f"{split}.txt" for split in ("train", "val")}


NOTEBOOK_SECTION = "05_gslrm"
# 0.8 M parameters; = the shipped demo model's config (weights/recipes/gslrm_demo_128.yaml): 128², patch 8, so a
# view is 16² tokens as at 64² with patch 4. depth_range 1.0, not FaceLift's 1.8: the mouse fits in +-0.9 units,
# and at 1.8 pixel gaussians escaped behind the scene (floaters). The scale constants are the 64² model's
# (-2.3, -1.2) minus log 2: a 128² pixel is half as wide (gslrm.model.double_resolution).
SMOKE_MODEL = {"image_size": 128, "patch_size": 8, "d": 128, "n_layers": 4, "n_heads": 4, "depth_range": 1.0,
               "scale_bias": -2.3 - math.log(2), "scale_max_log": -1.2 - math.log(2)}
# The smoke recipe by where training starts (lr, max_steps None in profile_train_config): fine-tuning the shipped
# model (weights/gslrm_demo_128.pt, SMOKE_MODEL) on 05's 6 smoke frames takes a low rate and half the steps of
# training from scratch. On 07's unseen sequence (benchmarks/probe_gslrm_finetune_lr.py) lr 2e-4 wrecked the 128²
# model (Mask IoU 0.66 -> 0.48, heading error 4 -> 83 deg) and 1e-4 still cost 32 deg; 5e-5 costs little.
SMOKE_FROM_SHIPPED = {"lr": 5e-5, "max_steps": 300}
SMOKE_FROM_SCRATCH = {"lr": 1e-3, "max_steps": 600}


def profile_train_config(out_dir: str | Path, seed: int = 0, data_source: str = "preprocessed", image_size: int = 128,
                         model: dict | None = None, init_weights: str | None = "shipped", init_from: str | None = None,
                         finetune: str = "full", max_steps: int | None = None, warmup_steps: int = 30,
                         lr: float | None = None, batch_size: int = 1, views_per_step: int | None = 2,
                         background_gaussian_fraction: float = 0.1, skip_grad_norm: float = 200.0,
                         resume: str | None = None, overwrite: bool = True, ckpt_every: int | None = None
                         ) -> TrainConfig:
    """The TrainConfig of a workbook profile: the one route from a profile to a GS-LRM run.

    Notebook 05 calls it with its parameters; the torchrun CLI (`load_train_config(profile.yaml)`) calls
    it with the profile's `05_gslrm` section, so both train the same thing into <out_dir>/gslrm/run.
    The defaults are the smoke recipe (= notebook 05's parameters cell; tests/test_gslrm_train.py checks
    that both routes agree for params/smoke.yaml and params/full.yaml). model SMOKE_MODEL when None ({} is
    the FaceLift size); ckpt_every None = every max_steps // 4 steps.

    Where training starts: `init_weights` "shipped" (weights/gslrm_demo_128.pt, sha256-checked; or a manifest entry
    name), whose model_config `model` must equal; or `init_from` a FaceLift checkpoint (then
    init_weights must be None); or neither (from scratch). lr / max_steps None take the smoke recipe of that
    start: SMOKE_FROM_SHIPPED with init_weights, else SMOKE_FROM_SCRATCH.
    """
    model = dict(SMOKE_MODEL if model is None else model)
    if init_weights is not None:
        if init_from is not None:
            raise ValueError(f"init_weights={init_weights!r} and init_from={str(init_from)!r} both say what GS-LRM "
                             "training starts from: set init_weights=None (null in a profile) to fine-tune the "
                             "FaceLift checkpoint, or init_from=None to fine-tune the shipped model")
        from ..weights import shipped_start

        path, shipped_model = shipped_start(init_weights, "gslrm")
        if GSLRMConfig(**model) != GSLRMConfig(**shipped_model):
            differ = {k: (v, shipped_model.get(k)) for k, v in GSLRMConfig(**model).to_dict().items()
                      if v != shipped_model.get(k)}
            raise ValueError(f"model={model} is not the model of the shipped weights {path} (manifest "
                             f"model_config); they differ in {{field: (model, shipped)}} {differ}: set model to "
                             "the shipped config, or init_weights=None to train this model from scratch")
        init_from = str(path)
    recipe = SMOKE_FROM_SHIPPED if init_weights is not None else SMOKE_FROM_SCRATCH
    lr = recipe["lr"] if lr is None else lr
    max_steps = recipe["max_steps"] if max_steps is None else max_steps
    train_list = dataset_lists(out_dir, data_source)["train"]
    return TrainConfig(train_list=str(train_list), run_dir=str(Path(out_dir) / "gslrm" / "run"),
                       image_size=image_size, model=model,
                       init_from=init_from, finetune=finetune, max_steps=max_steps, warmup_steps=warmup_steps,
                       lr=lr, batch_size=batch_size, views_per_step=views_per_step,
                       background_gaussian_fraction=background_gaussian_fraction, skip_grad_norm=skip_grad_norm,
                       resume=resume, overwrite=overwrite, seed=seed, ckpt_every=max(1, max_steps // 4) if ckpt_every is None else ckpt_every)


def profile_config_from_yaml(path: str | Path, data: dict) -> TrainConfig:
    """`profile_train_config` of a profile YAML's contents (`training.read_profile_section`): its out_dir
    (resolved against the working directory, as the workbook runner does), seed, and the `05_gslrm` keys that
    are its arguments; the section's other keys are notebook 05's own (plots, metrics)."""
    import inspect

    profile = read_profile_section(path, NOTEBOOK_SECTION, data)
    args = set(inspect.signature(profile_train_config).parameters) - {"out_dir", "seed"}
    return profile_train_config(profile.out_dir.resolve(), seed=profile.seed,
                                **{k: v for k, v in profile.keys.items() if k in args})


def load_train_config(params: TrainConfig | dict | str | Path) -> TrainConfig:
    """TrainConfig from itself, a dict, or a YAML file.

    A YAML is either a flat mapping of TrainConfig keys, or a workbook profile (has `profile` or
    `out_dir`): then `profile_config_from_yaml`, the route notebook 05 takes too.
    """
    if isinstance(params, TrainConfig):
        return params
    if isinstance(params, (str, Path)):
        import yaml

        path = Path(params)
        if not path.is_file():
            raise FileNotFoundError(f"training parameters not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if "profile" in data or "out_dir" in data:
            return profile_config_from_yaml(path, data)
        params = data
    if not isinstance(params, dict):
        raise TypeError(f"train params must be a TrainConfig, a dict or a YAML path, got {type(params).__name__}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig keys {unknown}; known keys: {sorted(names)}")
    return TrainConfig(**params)


# --- distributed ------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref.startswith("cuda")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu") if device_pref == "auto" or world > 1 \
        else torch.device(device_pref)
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank=dist.get_rank() if world > 1 else 0, world=world, local_rank=local_rank), device


# --- model set-up: fine-tuning modes and FaceLift-structured weights ---------------------------------
def apply_finetune_mode(model: GSLRM, cfg: TrainConfig) -> nn.Module:
    """Set requires_grad (and inject LoRA adapters) for cfg.finetune; returns the model (modified in place)."""
    heads = ("pixel_gaussian_decoder.", "gaussian_upsampler.")
    if cfg.finetune == "full":
        model.requires_grad_(True)
    elif cfg.finetune == "freeze_transformer":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(heads))
    else:
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                          target_modules=LORA_TARGETS)
        inject_adapter_in_model(lora, model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name or (cfg.lora_train_heads and name.startswith(heads)))
    return model


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if hasattr(m, "base_layer") and hasattr(m, "get_delta_weight")}


def facelift_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Plain FaceLift-named weights (what `load_facelift_checkpoint` reads); LoRA deltas merged in."""
    state = model.state_dict()
    lora = _lora_layers(model)
    if not lora:
        return {k: v.detach().clone() for k, v in state.items()}
    out = {k: v.detach().clone() for k, v in state.items() if "lora_" not in k and ".base_layer." not in k}
    for name, m in lora.items():
        out[f"{name}.weight"] = (m.base_layer.weight + m.get_delta_weight("default")).detach().clone()
    return out


def lora_adapter_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


@torch.no_grad()
def load_lora_state(model: nn.Module, merged: dict[str, Tensor], adapter: dict[str, Tensor], source: str) -> None:
    """Restore a LoRA model from merged FaceLift weights + its adapter: base = merged - delta."""
    lora = _lora_layers(model)
    missing = sorted(set(k for k in model.state_dict() if "lora_" in k) - set(adapter))
    if missing:
        raise CheckpointError(f"{source}: LoRA adapter weights missing: {missing[:6]} (was it a LoRA run with the "
                              "same lora_rank?)")
    model.load_state_dict(adapter, strict=False)
    for name, m in lora.items():
        m.base_layer.weight.copy_(merged[f"{name}.weight"] - m.get_delta_weight("default"))
    rest = {k: v for k, v in merged.items() if not any(k == f"{n}.weight" for n in lora)}
    model.load_state_dict(rest, strict=False)


def build_model(cfg: TrainConfig) -> GSLRM:
    """A fresh GSLRM (seeded init), or `init_from`'s FaceLift weights (strict load)."""
    torch.manual_seed(cfg.seed)
    model = GSLRM(cfg.model_config())
    if cfg.init_from:
        ckpt = read_checkpoint(cfg.init_from)
        if cfg.init_double_resolution:
            if "model_config" not in ckpt:
                raise CheckpointError(f"{cfg.init_from} has no model_config: init_double_resolution needs one of "
                                      "our checkpoints or shipped weights")
            doubled = double_resolution(model_from_checkpoint(ckpt, GSLRMConfig(**ckpt["model_config"]), cfg.init_from))
            state, ckpt = doubled.state_dict(), {"model_config": doubled.config.to_dict()}
        else:
            state = model_state_from_checkpoint(ckpt, cfg.init_from)
        if "model_config" in ckpt:  # same shapes but other activation constants would load silently wrong
            check_same_model_config(GSLRMConfig(**ckpt["model_config"]), model.config, cfg.init_from,
                                    cfg.init_double_resolution)
        check_state_dict(model, state, cfg.init_from)
        model.load_state_dict(state, strict=True)
        note("gslrm", f"initialised from {cfg.init_from}{' at twice its resolution' * cfg.init_double_resolution} "
                      "(training state reset to step 0)")
    return model


def check_same_model_config(source: GSLRMConfig, model: GSLRMConfig, path: str, doubled: bool = False) -> None:
    """init_from's model_config must be the recipe's `model` (up to settings that do not change what it
    computes): a ValueError naming each field and the value to write."""
    ignore = {"gradient_checkpointing", "init_std"}
    diff = {k: v for k, v in source.to_dict().items() if k not in ignore and getattr(model, k) != v}
    if diff:
        what = "twice its resolution" if doubled else "it"
        raise ValueError(f"TrainConfig: init_from {path} at {what} has model settings the recipe's `model` "
                         f"differs from; write them in `model`: {diff} (the recipe has "
                         f"{ {k: getattr(model, k) for k in diff} })")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on >=2-D trainable params only (FaceLift's two groups)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"finetune={cfg.finetune!r} leaves no trainable parameters")
    decay = [p for _, p in trainable if p.ndim >= 2]
    no_decay = [p for _, p in trainable if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_steps, then cosine from 1 to min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --- losses --------------------------------------------------------------------------------------
def weighted_mean(x: Tensor, w: Tensor | None) -> Tensor:
    if w is None:
        return x.mean()
    w = w.expand_as(x)
    return (x * w).sum() / w.sum().clamp(min=1e-6)


def reconstruction_losses(pred_rgb: Tensor, pred_alpha: Tensor, target_rgb: Tensor, target_alpha: Tensor,
                          cfg: TrainConfig, lpips: Callable | None = None) -> dict[str, Tensor]:
    """Unweighted loss terms on renders [E,3,S,S] / [E,1,S,S] vs targets; 'loss' = the weighted sum."""
    w = target_alpha if cfg.masked_losses else None
    terms = {"l2": weighted_mean((pred_rgb - target_rgb) ** 2, w)}
    if cfg.ssim_weight > 0:
        terms["ssim"] = weighted_mean(1 - ssim_map(pred_rgb, target_rgb).clamp(0, 1), w)
    if cfg.alpha_weight > 0:
        terms["alpha"] = (pred_alpha - target_alpha).abs().mean()
    if cfg.lpips_weight > 0:
        terms["lpips"] = lpips(pred_rgb.clamp(0, 1), target_rgb).mean()
    weights = {"l2": cfg.l2_weight, "ssim": cfg.ssim_weight, "alpha": cfg.alpha_weight, "lpips": cfg.lpips_weight}
    terms["loss"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def yaw_transform(angles: Tensor) -> Tensor:
    """[B] angles (rad) -> [B,1,4,4] world transforms T with w2c' = w2c @ T: the scene turned by the angle
    about the world Z axis (the cameras turn with it, so every image stays what it was)."""
    T = torch.eye(4).repeat(len(angles), 1, 1)
    T[:, :3, :3] = rotation_z(angles).transpose(-1, -2)  # R_z(angle)^T: a turned point maps back
    return T[:, None]


def batch_losses(model: nn.Module, batch: dict, cfg: TrainConfig, device: torch.device, background: Tensor,
                 lpips: Callable | None = None, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Predict from the input views, render the supervised views of every sample, average the loss terms.

    `generator` draws the random choices of the step (the trainer seeds one per step): the view order when
    `shuffle_views`, the yaw of `random_yaw`, the input views of `views_per_step`, the background subset."""
    images, K, w2c = batch["images"].to(device), batch["K"].to(device), batch["w2c"].to(device)
    if cfg.shuffle_views:  # GS-LRM has no view embedding: any view can be the held-out one
        order = torch.stack([torch.randperm(images.shape[1], generator=generator) for _ in range(images.shape[0])])
        pick = lambda x: torch.stack([x[b, order[b]] for b in range(x.shape[0])])  # noqa: E731
        images, K, w2c = pick(images), pick(K), pick(w2c)
    if cfg.random_yaw:
        w2c = w2c @ yaw_transform(torch.rand(images.shape[0], generator=generator) * 2 * math.pi).to(w2c)
    inp, sup = split_views(images.shape[1], cfg.num_input_views, "all" if cfg.supervise_input_views else "held_out")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
        g = model(images[:, inp, :3], (K[:, inp], w2c[:, inp]))
    keep = training_subset(images[:, inp, 3], g.means.shape[1], cfg.background_gaussian_fraction, generator)
    per_sample = []
    for b in range(images.shape[0]):
        views = sup
        if cfg.views_per_step is not None and cfg.views_per_step < len(sup):
            # held-out views first (they teach 3D), then random input views up to the budget
            held = [v for v in sup if v not in inp][: cfg.views_per_step]
            rest = [v for v in sup if v not in held]
            pick = torch.randperm(len(rest), generator=generator)[: cfg.views_per_step - len(held)].tolist()
            views = held + sorted(rest[i] for i in pick)
        gb = g[b]
        if keep is not None:  # background subset, opacities compensated for the gaussians left out
            rendered = keep[b] > 0
            gb = gb.select(rendered)
            gb = dataclasses.replace(gb, opacities=1 - (1 - gb.opacities).clamp(min=1e-6) ** keep[b, rendered])
        rgb, alpha = render_views(gb, K[b, views], w2c[b, views], images.shape[-1], background.to(device))
        tgt = images[b, views]
        per_sample.append(reconstruction_losses(rgb, alpha, tgt[:, :3], tgt[:, 3:4], cfg, lpips))
    return {k: torch.stack([t[k] for t in per_sample]).mean() for k in per_sample[0]}


def training_subset(input_alpha: Tensor, n_gaussians: int, fraction: float,
                    generator: torch.Generator | None = None) -> Tensor | None:
    """Which gaussians a training render uses, as an opacity exponent per gaussian [B,N] (0 = left out).

    input_alpha [B,V,H,W] of the input views. Gaussians of pixels within 2 px of the foreground and the
    global ones are always rendered (exponent 1); of the background-pixel ones a random `fraction` is
    rendered with exponent 1/fraction, i.e. opacity 1 - (1 - o)^(1/fraction): in log-transmittance the
    subset then stands in, on average, for the whole background, so training renders show the same
    haze as full renders. None = render everything (fraction >= 1).

    Why: the CPU renderer's cost grows with the number of gaussians and ~95 % of them sit on background
    pixels of a mouse; their weights are shared, so a random subset still teaches every one to vanish.
    """
    if fraction >= 1.0:
        return None
    if fraction <= 0:
        raise ValueError(f"background_gaussian_fraction must be in (0, 1], got {fraction}")
    B, V, H, W = input_alpha.shape
    fg = torch.nn.functional.max_pool2d(input_alpha.reshape(B * V, 1, H, W).float(), 5, stride=1, padding=2) > 0.5
    fg = fg.reshape(B, V * H * W).cpu()
    lucky = torch.rand(B, V * H * W, generator=generator) < fraction
    expo = torch.where(fg, 1.0, torch.where(lucky, 1.0 / fraction, 0.0))
    extra = torch.ones(B, n_gaussians - V * H * W)  # global gaussians
    return torch.cat([expo, extra], 1).to(input_alpha.device)


# --- checkpoints (names, saving, resume: facelift_lib.training) -----------------------------------
def load_trained_model(path: str | Path) -> GSLRM:
    """A model trained by `train`, for inference: from one of its checkpoints, or from a run folder (its
    newest). The architecture comes from the checkpoint's `model_config`, the weights load strictly (LoRA
    already merged). FaceLift's own checkpoints have no model_config: use `load_facelift_checkpoint`."""
    path = checkpoint_file(path, "notebook 05_gslrm (or python -m facelift_lib.gslrm.train)")
    ckpt = read_checkpoint(path)
    if "model_config" not in ckpt:
        raise CheckpointError(f"{path} has no model_config: it was not written by facelift_lib.gslrm.train; "
                              "load a FaceLift checkpoint with load_facelift_checkpoint(path, config)")
    return model_from_checkpoint(ckpt, GSLRMConfig(**ckpt["model_config"]), str(path)).eval()


def save_gslrm_checkpoint(run_dir: Path, model: nn.Module, optimizer, scheduler, step: int, updates: int,
                    cfg: TrainConfig, keep: int) -> Path:
    """Atomically write checkpoints/ckpt_{step:016d}.pt and keep the newest `keep` (`training.save_checkpoint`)."""
    ckpt = {"model": facelift_state_dict(model), "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "fwdbwd_pass_step": step, "param_update_step": updates,
            "rng": rng_state(), "train_config": cfg.to_dict(), "model_config": cfg.model_config().to_dict()}
    if cfg.finetune == "lora":
        ckpt["lora_adapter"] = lora_adapter_state(model)
    # a crash or a full disk mid-save leaves the previous checkpoints intact, and the error names the file
    return save_checkpoint(run_dir, step, ckpt, keep, "GS-LRM checkpoint")


def load_training_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, cfg: TrainConfig) -> tuple[int, int]:
    """Restore model, optimizer, scheduler and RNG from one of our checkpoints -> (step, updates)."""
    ckpt = read_checkpoint(path)
    saved = ckpt.get("model_config")
    if saved is not None and saved != cfg.model_config().to_dict():
        diff = {k: (saved.get(k), v) for k, v in cfg.model_config().to_dict().items() if saved.get(k) != v}
        raise CheckpointError(f"{path} was written for another model config (checkpoint vs now: {diff}); "
                              "use a new run_dir, or start over with resume=None, overwrite=True")
    if ckpt.get("train_config", {}).get("finetune", cfg.finetune) != cfg.finetune:
        raise CheckpointError(f"{path} is from finetune={ckpt['train_config']['finetune']!r}, now {cfg.finetune!r}; "
                              "use a new run_dir, or start over with resume=None, overwrite=True")
    if cfg.finetune == "lora":
        load_lora_state(model, ckpt["model"], ckpt.get("lora_adapter", {}), str(path))
    else:
        check_state_dict(model, ckpt["model"], str(path))
        model.load_state_dict(ckpt["model"], strict=True)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return int(ckpt["fwdbwd_pass_step"]), int(ckpt["param_update_step"])


# --- data order ----------------------------------------------------------------------------------
def batches_from(dataset, sampler: DistributedSampler, step: int, cfg: TrainConfig) -> Iterator[tuple[int, dict]]:
    """(step, batch) from `step` on: epoch e = step // steps_per_epoch uses sampler.set_epoch(e), so the
    data order is a function of (seed, step) and a resumed run sees exactly the batches it would have."""
    per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    while True:
        epoch, offset = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)[offset * cfg.batch_size:]
        loader = DataLoader(Subset(dataset, order), batch_size=cfg.batch_size, shuffle=False,
                            num_workers=cfg.num_workers, collate_fn=collate)
        for batch in loader:
            yield step, batch
            step += 1


@dataclass
class TrainResult:
    model: GSLRM                 # plain GSLRM with the trained (LoRA-merged) weights, eval mode, on CPU
    run_dir: Path
    checkpoint: Path | None      # the last checkpoint written
    log: list[dict]              # the whole run's log (including steps before a resume)
    steps: int
    skipped: int


# --- the trainer -----------------------------------------------------------------------------------
def train(params: TrainConfig | dict | str | Path, callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train (or resume, or fine-tune) GS-LRM; see the module doc. `callback(record)` runs on rank 0 after
    every step with the step's log record (for live plots; an exception from it stops the run)."""
    cfg = load_train_config(params)
    if launched_worker():
        die_with_parent()  # killing torchrun (even kill -9) must not leave its workers training as orphans
    ddp, device = init_distributed(cfg.device)
    run_dir = Path(cfg.run_dir)
    try:
        # one writer per run_dir: a second training into it fails at once, naming the PID that holds it
        with FolderLock(run_dir, "GS-LRM training") if ddp.main else contextlib.nullcontext():
            return _train(cfg, ddp, device, run_dir, callback)
    finally:
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ddp: Dist, device: torch.device, run_dir: Path,
           callback: Callable[[dict], None] | None) -> TrainResult:
    start = resolve_resume(run_dir, cfg.resume, cfg.overwrite, "gslrm")  # every rank: the same answer
    if ddp.world > 1:
        dist.barrier()  # every rank has looked before the first one clears a fresh run's folder
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if start is None:
            clear_run(run_dir)
        write_config(run_dir, cfg.to_dict())
    if ddp.world > 1:
        dist.barrier()

    dataset = ViewsDataset(training_samples(cfg.train_list), cfg.image_size, cfg.num_views, cfg.background,
                           validate=cfg.validate_data)
    background = dataset.background
    model = apply_finetune_mode(build_model(cfg), cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    lpips = make_lpips(cfg.lpips_weights) if cfg.lpips_weight > 0 else None

    step, updates = 0, 0
    if start is not None:
        step, updates = load_training_checkpoint(start, model, optimizer, scheduler, cfg)
        note("gslrm", f"resumed from {start} at step {step} (of max_steps {cfg.max_steps})")
        if ddp.main:
            rewind_log(run_dir, step)  # drop steps logged after the checkpoint we continue from

    train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None) if ddp.world > 1 else model
    train_model.train()
    sampler = DistributedSampler(dataset, num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=cfg.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    last_ckpt = start
    skipped = 0
    bar = tqdm(total=cfg.max_steps, initial=step, desc="GS-LRM train", disable=not (ddp.main and cfg.progress))
    started = time.perf_counter()
    try:
        data = batches_from(dataset, sampler, step, cfg) if step < cfg.max_steps else iter(())
        for step, batch in data:
            t0 = time.perf_counter()
            # per-step randomness is a function of (seed, rank, step): a resumed run draws what it would have
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ddp.rank * 10_007 + step)
            terms = batch_losses(train_model, batch, cfg, device, background, lpips, gen)
            terms["loss"].backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip, error_if_nonfinite=False))
            if ddp.world > 1:  # every rank sees the same all-reduced grads; agree on the loss too
                vals = torch.stack([t.detach().float() for t in terms.values()]).to(device)
                dist.all_reduce(vals)
                terms = {k: v / ddp.world for k, v in zip(terms, vals)}
            values = {k: float(v.detach()) for k, v in terms.items()}
            reason = skip_reason(values["loss"], grad_norm, cfg.skip_grad_norm)
            lr = scheduler.get_last_lr()[0]
            if reason is None:
                optimizer.step()
                updates += 1
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # after a skipped step torch warns that optimizer.step was not called
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                scheduler.step()  # the schedule follows fwd/bwd steps, skipped or not
            step += 1
            record = {"step": step, **values, "grad_norm": grad_norm, "skipped": reason is not None,
                      "skip_reason": reason, "lr": lr, "step_time": time.perf_counter() - t0,
                      "param_update_step": updates}
            if ddp.main:
                append_log(run_dir, record)
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}", gnorm=f"{grad_norm:.2f}", skipped=skipped)
            if reason is not None:
                note("gslrm", f"step {step} skipped ({reason}): loss {values['loss']:.4g}, grad norm {grad_norm:.4g}")
            out_of_time = cfg.max_wall_s is not None and time.perf_counter() - started >= cfg.max_wall_s
            if ddp.world > 1 and cfg.max_wall_s is not None:  # every rank stops at the same step
                flag = torch.tensor(float(out_of_time), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag > 0)
            if step % cfg.ckpt_every == 0 or step >= cfg.max_steps or out_of_time:
                if ddp.main:
                    last_ckpt = save_gslrm_checkpoint(run_dir, model, optimizer, scheduler, step, updates, cfg,
                                                      cfg.keep_checkpoints)
                if ddp.world > 1:
                    dist.barrier()
            if ddp.main and callback is not None:
                callback(record)
            if out_of_time and step < cfg.max_steps:
                note("gslrm", f"max_wall_s={cfg.max_wall_s:g} reached at step {step} of {cfg.max_steps}: stopped with a "
                     "checkpoint; resume='latest' continues")
                break
            if step >= cfg.max_steps:
                break
    finally:
        bar.close()

    final = GSLRM(cfg.model_config())
    final.load_state_dict(facelift_state_dict(model))
    history = read_log(run_dir) if ddp.main else []
    return TrainResult(model=final.eval(), run_dir=run_dir, checkpoint=last_ckpt, log=history, steps=step,
                       skipped=sum(r["skipped"] for r in history))


def main(argv: list[str] | None = None) -> None:
    """`python -m facelift_lib.gslrm.train params.yaml` (optionally under torchrun)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: [torchrun --nproc_per_node N] python -m facelift_lib.gslrm.train PARAMS.yaml")
    result = train(argv[0])
    if is_first_process():
        print(f"trained {result.steps} steps ({result.skipped} skipped); last checkpoint {result.checkpoint}")


if __name__ == "__main__":
    main()
