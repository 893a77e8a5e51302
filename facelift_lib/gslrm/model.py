"""GS-LRM: posed views -> per-pixel 3D Gaussians, FaceLift's architecture and checkpoint layout.

Written from FaceLift's documented conventions (../shared/facelift_reference/README.md and
layouts/gslrm_state_dict.json); no FaceLift code. At `GSLRMConfig()` (the FaceLift size) the
parameter names and shapes equal FaceLift's, so its `ckpt_*.pt` files load strictly.

Pipeline, per sample with V views of H x W pixels (H, W multiples of the patch size):
  input  [V,9,H,W] = [rgb*2-1, d, o + (-o·d) d]     (cameras.gslrm_input, FaceLift's ray convention)
  tokens = Linear(p*p*9 -> d, no bias) over p x p patches, features ordered (patch_h, patch_w, channel)
  [global tokens (learned, G of them), image tokens of all views] -> LayerNorm -> L pre-LN blocks
  (full self-attention over every token of every view; no positional embedding: rays carry pose)
  image tokens -> LayerNorm -> Linear(d -> p*p*14) -> 14 raw values per pixel
  global tokens -> LayerNorm -> Linear(d -> 14) -> one gaussian per global token

Activations (FaceLift's): 14 = xyz(3), SH DC(3), scale(3), rotation wxyz(4), opacity(1)
  pixel position: t = (2 sigmoid(mean of the 3 xyz values) - 1) * 1.8 + (-o·d), xyz = o + t d
                  (so every pixel gaussian lies on its own pixel ray, within ±1.8 of the point
                  nearest the world origin);
  scale exp(clamp(raw - 2.3, max=-1.2)); opacity sigmoid(raw - 2.0); rotation normalised;
  colour 0.28209479 * sh + 0.5 (SH degree 0; not clamped, so gradients flow; renderers clamp).
  global gaussians: xyz = the raw head output, no activation, unbounded (FaceLift's code; its
  `clip_xyz` clamp is inactive with the released config); the other activations as above.
  Pinned against FaceLift's own outputs by tests/test_facelift_parity.py.

Output: `Gaussians` with a batch dim, N = V*H*W + G. The first V*H*W are pixel-aligned in
(view, row, column) raster order (`.means[:, :V*H*W].view(B,V,H,W,3)`), the last G are global.
FaceLift orders them [G global, pixels patch-major]; `facelift_order_index` maps ours to theirs.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..cameras import Cameras, gslrm_input
from ..gaussians import SH_C0, Gaussians

log = logging.getLogger(__name__)

RAW_CHANNELS = 14  # xyz 3, SH DC 3, scale 3, rotation 4, opacity 1
FROZEN_PREFIXES = ("loss_calculator.",)  # FaceLift's frozen VGG19 perceptual-loss weights


@dataclass
class GSLRMConfig:
    """Model size and activation constants. No arguments = FaceLift's released size (303.6M params).

    A small CPU model: `GSLRMConfig(image_size=64, d=128, n_layers=4, n_heads=4)`.
    `image_size` is the nominal training resolution; the network itself runs at any H, W that
    are multiples of `patch_size` (there is no positional embedding).
    """

    image_size: int = 512
    patch_size: int = 8
    in_channels: int = 9
    d: int = 1024
    n_layers: int = 24
    n_heads: int = 16
    mlp_ratio: int = 4
    num_global_tokens: int = 2
    sh_degree: int = 0
    gradient_checkpointing: bool = False
    # FaceLift's activation constants
    depth_range: float = 1.8
    scale_bias: float = -2.3
    scale_max_log: float = -1.2
    opacity_bias: float = -2.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d % self.n_heads:
            raise ValueError(f"GSLRMConfig: d={self.d} is not divisible by n_heads={self.n_heads}")
        if self.sh_degree != 0:
            raise ValueError(f"GSLRMConfig: only sh_degree=0 is supported (Gaussians carry RGB), got {self.sh_degree}")
        if self.in_channels != 9:
            raise ValueError(f"GSLRMConfig: in_channels must be 9 ([rgb*2-1, d, o+(-o·d)d]), got {self.in_channels}")
        if self.image_size % self.patch_size:
            raise ValueError(f"GSLRMConfig: image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


# --- building blocks (module names mirror FaceLift's state-dict keys) -----------------------------
class Patchify(nn.Module):
    """[N,C,H,W] -> [N, (H/p)(W/p), p*p*C] with features ordered (patch_h, patch_w, channel)."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.p = patch_size

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        p = self.p
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # n, hp, wp, ph, pw, c
        return x.reshape(n, (h // p) * (w // p), p * p * c)


class SelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.to_qkv = nn.Linear(d, 3 * d, bias=False)
        self.fc = nn.Linear(d, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # flash / memory-efficient kernels on GPU
        return self.fc(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, d: int, ratio: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, ratio * d, bias=False), nn.GELU(), nn.Linear(ratio * d, d, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class TransformerBlock(nn.Module):
    """Pre-LN block without biases: x + attn(norm1(x)); x + mlp(norm2(x))."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, bias=False)
        self.attn = SelfAttention(d, n_heads)
        self.norm2 = nn.LayerNorm(d, bias=False)
        self.mlp = MLP(d, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GlobalGaussianHead(nn.Module):
    """Global tokens [B,G,d] -> raw gaussian values [B,G,14] (FaceLift's `gaussian_upsampler`)."""

    def __init__(self, d: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(d, bias=False)
        self.linear = nn.Linear(d, RAW_CHANNELS, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.layernorm(x))


# --- cameras -> model input -------------------------------------------------------------------
CameraBatch = Cameras | Sequence[Cameras] | tuple[Tensor, Tensor]


def cameras_per_sample(cams: CameraBatch, batch: int, height: int, width: int) -> list[Cameras]:
    """Normalise the accepted camera forms to one `Cameras` per sample.

    - a list of B `Cameras` (any image size: intrinsics are rescaled to H x W by the ray code);
    - one `Cameras`, shared by every sample;
    - a tuple `(K [B,V,3,3], w2c [B,V,4,4])` in pixels of the H x W images given to the model.
    """
    if isinstance(cams, Cameras):
        return [cams] * batch
    if isinstance(cams, tuple) and len(cams) == 2 and all(torch.is_tensor(c) for c in cams):
        K, w2c = cams
        if K.ndim != 4 or w2c.ndim != 4 or K.shape[0] != batch:
            raise ValueError(f"GSLRM: camera tensors must be K [B,V,3,3] and w2c [B,V,4,4] with B={batch}, "
                             f"got {tuple(K.shape)} and {tuple(w2c.shape)}")
        return [Cameras(K=K[b].detach().cpu(), w2c=w2c[b].detach().cpu(), width=width, height=height)
                for b in range(batch)]
    cams = list(cams)
    if len(cams) != batch or not all(isinstance(c, Cameras) for c in cams):
        raise ValueError(f"GSLRM: expected {batch} Cameras (one per sample), got {len(cams)} items")
    return cams


class GSLRM(nn.Module):
    """FaceLift's GS-LRM reconstructor. `model(images [B,V,3,H,W] in [0,1], cams) -> Gaussians [B,N,...]`."""

    def __init__(self, config: GSLRMConfig | None = None):
        super().__init__()
        self.config = config = config or GSLRMConfig()
        d, p = config.d, config.patch_size
        self.gaussian_position_embeddings = nn.Parameter(torch.empty(config.num_global_tokens, d))
        self.patch_embedder = nn.Sequential(Patchify(p), nn.Linear(p * p * config.in_channels, d, bias=False))
        self.input_layer_norm = nn.LayerNorm(d, bias=False)
        self.transformer_layers = nn.ModuleList(
            TransformerBlock(d, config.n_heads, config.mlp_ratio) for _ in range(config.n_layers))
        self.gaussian_upsampler = GlobalGaussianHead(d)
        self.pixel_gaussian_decoder = nn.Sequential(nn.LayerNorm(d, bias=False), nn.Linear(d, p * p * RAW_CHANNELS, bias=False))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Truncated-normal(std) linears and global tokens, unit LayerNorms; no-op on the meta device."""
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
        nn.init.trunc_normal_(self.gaussian_position_embeddings, std=std, a=-2 * std, b=2 * std)
        # residual branches start small (GPT-2 style) so that deep stacks train stably from scratch
        for blk in self.transformer_layers:
            blk.attn.fc.weight.mul_(1 / math.sqrt(2 * self.config.n_layers))
            blk.mlp.mlp[2].weight.mul_(1 / math.sqrt(2 * self.config.n_layers))

    # --- pieces ---------------------------------------------------------------------------------
    def model_input(self, images: Tensor, cams: CameraBatch) -> Tensor:
        """images [B,V,3,H,W] in [0,1] -> FaceLift's 9-channel input [B,V,9,H,W]."""
        B, V, _, H, W = images.shape
        per_sample = cameras_per_sample(cams, B, H, W)
        for b, c in enumerate(per_sample):
            if len(c) != V:
                raise ValueError(f"GSLRM: sample {b} has {V} images but {len(c)} cameras")
        return torch.stack([gslrm_input(images[b, :, :3], c) for b, c in enumerate(per_sample)])

    def transformer(self, tokens: Tensor) -> Tensor:
        x = self.input_layer_norm(tokens)
        for blk in self.transformer_layers:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, images: Tensor, cams: CameraBatch) -> Gaussians:
        """images [B,V,3,H,W] in [0,1] (extra channels, e.g. alpha, are ignored), cams: see
        `cameras_per_sample`. Returns batched Gaussians [B, V*H*W + G, ...] (see module doc)."""
        if images.ndim != 5:
            raise ValueError(f"GSLRM: images must be [B,V,3,H,W], got {tuple(images.shape)}")
        B, V, _, H, W = images.shape
        p, G = self.config.patch_size, self.config.num_global_tokens
        if H % p or W % p:
            raise ValueError(f"GSLRM: image size {H}x{W} is not a multiple of the patch size {p}; resize the views")
        x9 = self.model_input(images, cams).to(self.gaussian_position_embeddings.dtype)  # [B,V,9,H,W]
        hp, wp = H // p, W // p
        img_tokens = self.patch_embedder(x9.reshape(B * V, 9, H, W)).reshape(B, V * hp * wp, -1)
        tokens = torch.cat([self.gaussian_position_embeddings.expand(B, -1, -1).to(img_tokens.dtype), img_tokens], 1)
        tokens = self.transformer(tokens)

        raw = self.pixel_gaussian_decoder(tokens[:, G:])                        # [B, V*hp*wp, p*p*14]
        raw = raw.reshape(B, V, hp, wp, p, p, RAW_CHANNELS).permute(0, 1, 2, 4, 3, 5, 6)
        raw = raw.reshape(B, V * H * W, RAW_CHANNELS).float()                  # raster order per view
        rays = x9[:, :, 3:].permute(0, 1, 3, 4, 2).reshape(B, V * H * W, 6).float()
        pixel = self.activate_pixel(raw, dirs=rays[..., :3], nearest=rays[..., 3:])
        glob = self.activate_global(self.gaussian_upsampler(tokens[:, :G]).float())
        return Gaussians(**{k: torch.cat([getattr(pixel, k), getattr(glob, k)], 1)
                            for k in ("means", "quats", "scales", "opacities", "colors")})

    # --- activations ------------------------------------------------------------------------------
    def _activate_common(self, raw: Tensor, means: Tensor) -> Gaussians:
        c = self.config
        sh, scale, rot, opac = raw[..., 3:6], raw[..., 6:9], raw[..., 9:13], raw[..., 13]
        return Gaussians(
            means=means,
            quats=F.normalize(rot, dim=-1, eps=1e-8),
            scales=torch.exp(torch.clamp(scale + c.scale_bias, max=c.scale_max_log)),
            opacities=torch.sigmoid(opac + c.opacity_bias),
            colors=SH_C0 * sh + 0.5,
        )

    def activate_pixel(self, raw: Tensor, dirs: Tensor, nearest: Tensor) -> Gaussians:
        """raw [...,14], unit ray dirs d [...,3], nearest points o + (-o·d) d [...,3].

        xyz = o + t d with t = (2 sigmoid(mean xyz) - 1) * range + (-o·d) = nearest + s d.
        """
        s = (2 * torch.sigmoid(raw[..., 0:3].mean(-1, keepdim=True)) - 1) * self.config.depth_range
        return self._activate_common(raw, nearest + s * dirs)

    def activate_global(self, raw: Tensor) -> Gaussians:
        """raw [...,14] of the global tokens; xyz is the raw output itself, as in FaceLift (no range)."""
        return self._activate_common(raw, raw[..., 0:3])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def double_resolution(model: GSLRM) -> GSLRM:
    """A GS-LRM for views of twice the side, computing what `model` computes: a warm start at 2x resolution.

    Same tokens: the patch grows to 2p, so a 2S² view gives the S² model's token count. The patch embedder reads
    each 2x2 block of input pixels as the mean of its parent pixel (its weights split over the four), so a view
    whose 2x2 means are the S² view (RGB, and its rays up to their sub-pixel offsets) gives the S² tokens. The
    decoder gives each of a parent's four pixels the parent's gaussian, on the child's own ray, and the scales
    are halved (`scale_bias`, `scale_max_log` - log 2): four gaussians half the size tile the parent's footprint,
    so the renders match the S² model's (a test checks). Transformer and global tokens are copied unchanged."""
    c = model.config
    cfg = GSLRMConfig(**{**c.to_dict(), "image_size": 2 * c.image_size, "patch_size": 2 * c.patch_size,
                         "scale_bias": c.scale_bias - math.log(2), "scale_max_log": c.scale_max_log - math.log(2)})
    big = GSLRM(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    p, C = c.patch_size, c.in_channels
    child_of = torch.arange(2 * p) // 2  # child row/col in the 2p patch -> parent row/col in the p patch
    emb = state["patch_embedder.1.weight"].reshape(-1, p, p, C)               # [d, ph, pw, C]
    state["patch_embedder.1.weight"] = (emb[:, child_of][:, :, child_of] / 4).reshape(emb.shape[0], -1)
    dec = state["pixel_gaussian_decoder.1.weight"].reshape(p, p, RAW_CHANNELS, -1)  # [ph, pw, 14, d]
    state["pixel_gaussian_decoder.1.weight"] = dec[child_of][:, child_of].reshape(-1, dec.shape[-1])
    big.load_state_dict(state, strict=True)
    return big.to(next(model.parameters()).device).train(model.training)


def facelift_order_index(num_views: int, height: int, width: int, patch_size: int, num_global: int) -> Tensor:
    """Index [N] that puts our gaussian order into FaceLift's: `g[:, facelift_order_index(...)]`.

    Ours: [V*H*W pixel gaussians in per-view raster order, then the G global ones].
    FaceLift's: [G global, then pixels in (view, patch row, patch col, row in patch, col in patch)].
    """
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"facelift_order_index: {height}x{width} is not a multiple of the patch size {p}")
    pix = torch.arange(num_views * height * width).reshape(num_views, height // p, p, width // p, p)
    pix = pix.permute(0, 1, 3, 2, 4).reshape(-1)  # (view, patch row, patch col, row, col)
    glob = torch.arange(num_global) + num_views * height * width
    return torch.cat([glob, pix])


# --- FaceLift checkpoints ----------------------------------------------------------------------
class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded into the model as asked (names what is wrong)."""


def read_checkpoint(path: str | Path) -> dict:
    """torch.load a `ckpt_*.pt` on CPU; FileNotFoundError / CheckpointError naming the path."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory: pass the ckpt_*.pt file inside it)" if path.is_dir() else ""
        raise FileNotFoundError(f"GS-LRM checkpoint not found: {path}{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt/truncated file or a pickle with arbitrary objects
        raise CheckpointError(f"cannot read GS-LRM checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a FaceLift GS-LRM checkpoint: expected a dict with a 'model' "
                              f"state dict (FaceLift's ckpt_*.pt), found {keys}")
    return ckpt


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if not (missing or unexpected or shapes):
        return

    def block(title: str, items: list[str]) -> str:
        if not items:
            return ""
        more = f"\n    ... {len(items) - 12} more" if len(items) > 12 else ""
        return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:12]) + more

    cfg = getattr(model, "config", None)
    hint = (f"\nThe model was built with {cfg}; a FaceLift checkpoint needs GSLRMConfig() (the FaceLift size)."
            if cfg is not None else "")
    raise CheckpointError(f"GS-LRM checkpoint {source} does not match the model:"
                          + block("missing keys", missing) + block("unexpected keys", unexpected)
                          + block("shape mismatches", shapes) + hint)


def model_state_from_checkpoint(ckpt: dict, source: str) -> dict[str, Tensor]:
    """The checkpoint's model state without FaceLift's frozen VGG loss weights (dropped with a log note)."""
    state = ckpt["model"]
    dropped = [k for k in state if k.startswith(FROZEN_PREFIXES)]
    if dropped:
        log.info("%s: dropping %d frozen perceptual-loss (VGG19) keys under %s; they are not part of the "
                 "reconstructor", source, len(dropped), "/".join(FROZEN_PREFIXES))
    return {k: v for k, v in state.items() if not k.startswith(FROZEN_PREFIXES)}


def load_facelift_checkpoint(path: str | Path, config: GSLRMConfig | None = None) -> GSLRM:
    """Build GSLRM(config or FaceLift size) on CPU and load a FaceLift `ckpt_*.pt` strictly.

    `loss_calculator.*` (frozen VGG19) keys are dropped with a logged note. Any other missing or
    unexpected key or shape mismatch raises CheckpointError listing them; a missing file raises
    FileNotFoundError with the path.
    """
    path = Path(path)
    return model_from_checkpoint(read_checkpoint(path), config or GSLRMConfig(), str(path))


def model_from_checkpoint(ckpt: dict, config: GSLRMConfig, source: str) -> GSLRM:
    """GSLRM(config) holding a read checkpoint's weights, loaded strictly (CheckpointError otherwise)."""
    state = model_state_from_checkpoint(ckpt, source)
    with torch.device("meta"):  # no 1.2 GB random init that the checkpoint overwrites anyway
        model = GSLRM(config)
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=True)
    return model.float()
