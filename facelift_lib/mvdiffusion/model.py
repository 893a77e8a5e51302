"""Multi-view diffusion models: a stock diffusers `UNet2DConditionModel` whose self-attention spans the
views of one sample, plus the conditioning around it.

Two denoisers share one interface (used by `pipeline.sample_views` and `train.train`):
- `PixelMVDiffusion`: small pixel-space model for CPU (RGBA at 32²–64², attention only at the lowest
  resolution, reference image concatenated on channels, per-view embeddings as cross-attention context).
- `LatentMVDiffusion`: FaceLift's layout (VAE latents, reference latent concatenated on channels,
  CLIP image embedding + noise-level embedding as `class_labels`, per-view text embeddings), built by
  `pipeline.load_facelift_pipeline` from a local diffusers folder.

Batches inside the UNet are [B*V, ...] with the V views of a sample contiguous.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import Cameras, plucker_rays, standard_cameras
from ..images import on_white, resize_rgba
from .view_prior import alpha_to_bank, mirror_permutation, nearest_views

MV_MODES = ("sparse", "dense", "none")

# The stable-diffusion-2-1-unclip UNet config with FaceLift's changes (in_channels 8: noisy latent +
# reference latent; sample_size 64 = 512² images). FaceLift's multi-view UNet has exactly this stock
# layout (shared/facelift_reference/layouts/mv_unet_state_dict.json); the multi-view part is only the
# attn1 processor, which `set_multiview_attention` installs.
FACELIFT_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64, in_channels=8, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    only_cross_attention=False, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    class_embed_type="projection", projection_class_embeddings_input_dim=2048, upcast_attention=True,
    resnet_time_scale_shift="default", time_embedding_type="positional", conv_in_kernel=3, conv_out_kernel=3,
)


# --- multi-view attention -------------------------------------------------------------------------------
class MultiViewAttnProcessor:
    """Self-attention (`attn1`) across the views of one sample, with `F.scaled_dot_product_attention`.

    hidden_states: [B*V, N, C] (or [B*V, C, H, W]), views of a sample contiguous.
    mode "sparse": keys/values of view v = concat(view 0 tokens, view v tokens) (FaceLift; cost linear in V).
    mode "dense":  every view attends to the tokens of all V views (cost quadratic in V).
    mode "none":   plain per-view self-attention.
    """

    def __init__(self, num_views: int, mode: str = "sparse") -> None:
        if mode not in MV_MODES:
            raise ValueError(f"MultiViewAttnProcessor: mode must be one of {MV_MODES}, got {mode!r}")
        if num_views < 1:
            raise ValueError(f"MultiViewAttnProcessor: num_views must be >= 1, got {num_views}")
        self.num_views, self.mode = int(num_views), mode

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("MultiViewAttnProcessor is for self-attention (attn1); "
                             "cross-attention keeps its own processor")
        if attention_mask is not None:
            raise ValueError("MultiViewAttnProcessor does not support attention masks (UNet self-attention has none)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            bv, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(bv, channel, height * width).transpose(1, 2)
        bv, n_tok, _ = hidden_states.shape
        V = self.num_views
        if bv % V:
            raise ValueError(f"MultiViewAttnProcessor: batch {bv} is not a multiple of num_views={V}; "
                             "batches must be [B*V, ...] with the views of each sample contiguous")
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        heads = attn.heads
        head_dim = k.shape[-1] // heads
        q, k, v = (x.view(bv, n_tok, heads, head_dim).transpose(1, 2) for x in (q, k, v))  # [BV,h,N,d]
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)

        B = bv // V
        if self.mode == "sparse":
            def with_view0(x: torch.Tensor) -> torch.Tensor:  # [BV,h,N,d] -> [BV,h,2N,d]
                x = x.view(B, V, heads, n_tok, head_dim)
                return torch.cat([x[:, :1].expand_as(x), x], dim=3).reshape(bv, heads, 2 * n_tok, head_dim)
            out = F.scaled_dot_product_attention(q, with_view0(k), with_view0(v), scale=attn.scale)
        elif self.mode == "dense":
            def joint(x: torch.Tensor) -> torch.Tensor:  # [BV,h,N,d] -> [B,h,V*N,d]
                return x.view(B, V, heads, n_tok, head_dim).transpose(1, 2).reshape(B, heads, V * n_tok, head_dim)
            out = F.scaled_dot_product_attention(joint(q), joint(k), joint(v), scale=attn.scale)
            out = out.view(B, heads, V, n_tok, head_dim).transpose(1, 2).reshape(bv, heads, n_tok, head_dim)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)

        out = out.transpose(1, 2).reshape(bv, n_tok, heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(bv, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def set_multiview_attention(unet: nn.Module, num_views: int, mode: str = "sparse") -> nn.Module:
    """Install `MultiViewAttnProcessor(num_views, mode)` on every self-attention (`attn1`) of `unet`.

    Cross-attention (`attn2`) keeps its current processor (per view). Returns `unet`.
    """
    current = unet.attn_processors
    if not any(name.endswith("attn1.processor") for name in current):
        raise ValueError("set_multiview_attention: the UNet has no self-attention layers (attn1); "
                         "use at least one CrossAttn block")
    processor = MultiViewAttnProcessor(num_views, mode)
    unet.set_attn_processor({name: processor if name.endswith("attn1.processor") else proc
                             for name, proc in current.items()})
    return unet


def multiview_attention_mode(unet: nn.Module) -> tuple[int, str]:
    """(num_views, mode) of the processors on `unet`'s attn1 layers; an error if they disagree or are stock."""
    found = {(p.num_views, p.mode) if isinstance(p, MultiViewAttnProcessor) else None
             for name, p in unet.attn_processors.items() if name.endswith("attn1.processor")}
    if len(found) != 1 or None in found:
        raise ValueError(f"UNet self-attention processors are not one multi-view setting: {found}")
    return found.pop()


# --- per-view embeddings (cross-attention context) --------------------------------------------------------
VIEW_EMBEDDINGS = ("learned", "camera", "plucker", "file")


def load_view_embeddings(path: str | Path, num_views: int) -> torch.Tensor:
    """Per-view embeddings [V,L,D] (float32) from a torch file holding a tensor (e.g. FaceLift's clr_embeds.pt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"view embeddings file not found: {path} (a torch file with a [V,L,D] tensor, "
                                "e.g. facelift_reference/prompt_embeds/clr_embeds.pt)")
    emb = torch.load(path, map_location="cpu", weights_only=True)
    if not torch.is_tensor(emb) or emb.ndim != 3 or emb.shape[0] != num_views:
        shape = tuple(emb.shape) if torch.is_tensor(emb) else type(emb).__name__
        raise ValueError(f"{path}: expected a [{num_views},L,D] tensor of per-view embeddings, got {shape}")
    return emb.float()


def camera_angle_features(cams: Cameras, n_freq: int = 4) -> torch.Tensor:
    """[V, 4*n_freq] Fourier features of each camera's elevation and azimuth (azimuth relative to view 0)."""
    c = cams.centers
    az = torch.atan2(c[:, 1], c[:, 0])
    az = az - az[0]
    el = torch.asin((c[:, 2] / c.norm(dim=-1)).clamp(-1, 1))
    k = torch.arange(1, n_freq + 1, dtype=torch.float64)
    ang = torch.cat([az[:, None] * k, el[:, None] * k], 1)
    return torch.cat([ang.sin(), ang.cos()], 1).float()


class ViewEmbedding(nn.Module):
    """Cross-attention context per view: `forward() -> [V, L, D]`.

    kind "learned": free parameters [V, L, D].
    kind "camera":  MLP of each view camera's elevation/azimuth Fourier features -> L tokens.
    kind "plucker": each view's Plücker rays on a grid² (FaceLift ray convention) -> grid² tokens via an MLP.
    kind "file":    fixed embeddings loaded from `path` ([V, L, D_file], e.g. FaceLift's clr_embeds.pt);
                    when D_file differs from D a learned linear projection maps them (said in `describe()`).
    """

    def __init__(self, kind: str, num_views: int, dim: int, tokens: int = 4, cams: Cameras | None = None,
                 path: str | Path | None = None, plucker_grid: int = 4) -> None:
        super().__init__()
        if kind not in VIEW_EMBEDDINGS:
            raise ValueError(f"ViewEmbedding: kind must be one of {VIEW_EMBEDDINGS}, got {kind!r}")
        self.kind, self.num_views, self.dim = kind, num_views, dim
        self.proj: nn.Module = nn.Identity()
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(num_views, tokens, dim) * 0.02)
        elif kind in ("camera", "plucker"):
            if cams is None or len(cams) != num_views:
                raise ValueError(f"ViewEmbedding({kind!r}) needs the {num_views} view cameras")
            if kind == "camera":
                feats = camera_angle_features(cams)[:, None, :]  # [V,1,F]
                out = dim * tokens
            else:
                rays = plucker_rays(cams, "facelift", height=plucker_grid, width=plucker_grid)  # [V,6,g,g]
                feats = rays.flatten(2).transpose(1, 2)  # [V,g²,6]
                out = dim
            self.register_buffer("features", feats, persistent=False)
            self.mlp = nn.Sequential(nn.Linear(feats.shape[-1], dim), nn.SiLU(), nn.Linear(dim, out))
            self.tokens = tokens
        else:
            if path is None:
                raise ValueError("ViewEmbedding('file') needs `path` to a [V,L,D] embeddings file")
            emb = load_view_embeddings(path, num_views)
            self.register_buffer("table", emb)
            if emb.shape[-1] != dim:
                self.proj = nn.Linear(emb.shape[-1], dim)

    def forward(self) -> torch.Tensor:
        if self.kind == "learned":
            return self.table
        if self.kind == "camera":
            return self.mlp(self.features).view(self.num_views, self.tokens, self.dim)
        if self.kind == "plucker":
            return self.mlp(self.features)
        return self.proj(self.table)


# --- the small pixel-space model --------------------------------------------------------------------------
@dataclass
class PixelModelConfig:
    """Small pixel-space multi-view model for CPU. Attention at the `attention_levels` lowest resolutions."""

    image_size: int = 64
    channels: int = 4  # RGBA: RGB composited on white + alpha, so generated views carry their masks
    num_views: int = 6
    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)  # 64² -> attention at 8²
    layers_per_block: int = 1
    attention_head_dim: int = 16
    cross_attention_dim: int = 64
    mv_attention: str = "sparse"
    view_embedding: str = "camera"  # learned | camera | plucker | file
    view_embedding_tokens: int = 4
    view_embedding_path: str | None = None
    camera_type: str = "mouse_standard_6view"
    # Which view a pixel belongs to, where the UNet computes at every resolution (the cross-attention context
    # above reaches only the attention level): the view's ray map concatenated to its input, and/or a learned
    # per-view vector added to the timestep embedding (so every ResNet block's bias knows the view).
    view_rays: bool = False
    view_class_embedding: bool = False
    # The views' side: the UNet (image_size²) generates their central crop, the rest is background. The mouse
    # is centred in every standard view and covers ~4 % of it, so a 64² UNet in a 96² frame puts 2.25x the
    # pixels on the mouse at the same cost; the crop's edge cuts ~0.5 % of its alpha (tail tips, BENCHMARKS).
    # None: the whole frame (frame_size = image_size).
    frame_size: int | None = None
    # How many of the UNet's lowest levels carry (multi-view) attention: 1 = only the lowest (8² for 64² and
    # four blocks), 2 adds the next (16²), where a ~30 px mouse is ~8 tokens long instead of ~4, so the views
    # exchange its shape at twice the detail. The mid block always attends.
    attention_levels: int = 1
    # The retrieval prior (`view_prior`): each view gets, pixel-aligned, the mean alpha of that view over the
    # `view_prior_k` training mice whose input view looks most alike, from a bank of `view_prior_mice` mice at
    # `view_prior_size`² saved in the state dict (the trainer fills it from the first view_prior_mice training
    # mice). 0: no prior.
    view_prior_mice: int = 0
    view_prior_size: int = 32
    view_prior_k: int = 8
    # Retrieve from the bank's mirror images too (`view_prior.mirror_permutation`: a mirrored mouse is as much a
    # mouse; twice the bank, nothing more stored). Needs a rig symmetric about camera 0's vertical plane.
    view_prior_mirror: bool = False

    @property
    def attention_resolution(self) -> int:
        """Side of the finest level with attention."""
        return self.image_size // 2 ** (len(self.block_out_channels) - self.attention_levels)

    @property
    def frame(self) -> int:
        """Side of the views the model reads and returns (frame_size, or image_size when None)."""
        return self.frame_size or self.image_size

    @property
    def crop_offset(self) -> int:
        """Pixels of the frame left of (and above) the UNet's central crop."""
        return (self.frame - self.image_size) // 2


def crop_cameras(cfg: PixelModelConfig) -> Cameras:
    """The standard cameras of the UNet's pixels: `camera_type` at the frame size, cropped to its centre."""
    if cfg.frame < cfg.image_size or (cfg.frame - cfg.image_size) % 2:
        raise ValueError(f"PixelModelConfig: frame_size {cfg.frame_size} must be image_size {cfg.image_size} plus an "
                         "even number of pixels (the UNet generates the frame's central crop)")
    cams = standard_cameras(cfg.camera_type, cfg.frame)
    o = cfg.crop_offset
    return cams if o == 0 else cams.crop_resize(o, o, cfg.image_size, cfg.image_size, cfg.image_size, cfg.image_size)


def build_small_unet(cfg: PixelModelConfig) -> nn.Module:
    """Stock `UNet2DConditionModel`: ResNet-only blocks at the high resolutions, cross/self-attention only at
    the `attention_levels` lowest (a dense 6-view attention at 64² does not finish in minutes on CPU; 8²–16² does)."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    if cfg.image_size % 2 ** (n - 1):
        raise ValueError(f"image_size {cfg.image_size} must be divisible by 2**{n - 1} for {n} UNet blocks")
    a = cfg.attention_levels
    if not 1 <= a <= n:
        raise ValueError(f"PixelModelConfig: attention_levels {a} must be 1..{n} (the UNet has {n} levels)")
    heads = [max(1, c // cfg.attention_head_dim) for c in cfg.block_out_channels]
    unet = UNet2DConditionModel(
        sample_size=cfg.image_size,
        in_channels=2 * cfg.channels + (6 if cfg.view_rays else 0) + (1 if cfg.view_prior_mice else 0),
        out_channels=cfg.channels, num_class_embeds=cfg.num_views if cfg.view_class_embedding else None,
        down_block_types=("DownBlock2D",) * (n - a) + ("CrossAttnDownBlock2D",) * a,
        up_block_types=("CrossAttnUpBlock2D",) * a + ("UpBlock2D",) * (n - a),
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        # diffusers' `attention_head_dim` is the number of heads (its documented naming issue #2011)
        cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=tuple(heads),
        norm_num_groups=min(32, min(cfg.block_out_channels) // 2),
    )
    return set_multiview_attention(unet, cfg.num_views, cfg.mv_attention)


def to_model_pixels(images: torch.Tensor) -> torch.Tensor:
    """Straight RGBA in [0,1] [...,4,H,W] -> model space [-1,1]: RGB composited on white, alpha kept."""
    return on_white(images) * 2 - 1


def from_model_pixels(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1,1] -> RGBA in [0,1] (RGB stays composited on white)."""
    return ((x + 1) / 2).clamp(0, 1)


class PixelMVDiffusion(nn.Module):
    """Small multi-view diffusion model in pixel space.

    forward(x_t [B,V,C,S,S], t [B], cond) -> model output [B,V,C,S,S]; cond = {"reference": [B,C,S,S]}
    in model space (zeros = dropped, for classifier-free guidance). The reference image is concatenated
    to every view's noisy input on channels; per-view embeddings are the cross-attention context. With
    `view_rays`, each view's ray map [6,S,S] (`plucker_rays`, FaceLift convention) is concatenated too; with
    `view_class_embedding`, the view index is a class label added to the timestep embedding. With
    `view_prior_mice`, cond also holds "view_prior" [B,V,1,S,S]: each view's retrieved alpha (`view_prior`),
    concatenated to that view's input (zeros when the reference is dropped).
    """

    kind = "pixel"

    def __init__(self, cfg: PixelModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_views = cfg.num_views
        self.unet = build_small_unet(cfg)
        cams = crop_cameras(cfg)
        if len(cams) != cfg.num_views:
            raise ValueError(f"camera_type {cfg.camera_type!r} has {len(cams)} views, the model {cfg.num_views}")
        self.view_embedding = ViewEmbedding(cfg.view_embedding, cfg.num_views, cfg.cross_attention_dim,
                                            cfg.view_embedding_tokens, cams=cams, path=cfg.view_embedding_path)
        if cfg.view_rays:  # a function of the fixed cameras: rebuilt, not saved
            rays = plucker_rays(cams, "facelift", height=cfg.image_size, width=cfg.image_size)  # [V,6,S,S]
            self.register_buffer("view_ray_maps", rays, persistent=False)
        if cfg.view_prior_mice:  # filled by `set_view_prior_bank` (training) or the state dict (loading)
            s = cfg.view_prior_size
            self.register_buffer("view_prior_bank", torch.zeros(cfg.view_prior_mice, cfg.num_views, s, s,
                                                                dtype=torch.uint8))
        self.view_prior_mirror = mirror_permutation(cams) if cfg.view_prior_mirror else None

    def set_view_prior_bank(self, views: torch.Tensor) -> None:
        """views RGBA [M,V,4,H,W] in [0,1] (M = cfg.view_prior_mice training mice) -> the retrieval bank, in the
        UNet's crop as the model reads views."""
        M = self.cfg.view_prior_mice
        if views.shape[0] != M:
            raise ValueError(f"view prior: the bank holds view_prior_mice = {M} mice, got {views.shape[0]}")
        alpha = torch.cat([(self.encode_views(views[i:i + 64])[:, :, 3] + 1) / 2 for i in range(0, M, 64)])
        self.view_prior_bank.copy_(alpha_to_bank(alpha, self.cfg.view_prior_size))

    def untrained_like(self) -> "PixelMVDiffusion":
        """A freshly initialised model of this config (eval mode) holding this model's retrieval bank, if any: the
        control for "does training matter" where only the training differs (seed torch first)."""
        blank = PixelMVDiffusion(self.cfg).eval()
        if self.cfg.view_prior_mice:
            blank.view_prior_bank.copy_(self.view_prior_bank)
        return blank

    def view_prior_alpha(self, reference: torch.Tensor) -> torch.Tensor:
        """reference RGBA [B,4,H,W] in [0,1] -> [B,V,F,F] the retrieval prior's alpha of each view in the frame
        (what the model is given before it generates; 0 outside the UNet's crop). A baseline for its views."""
        prior = self.view_prior(self.encode_views(reference[:, None])[:, 0])  # [B,V,1,S,S] model space
        x0 = torch.cat([torch.ones_like(prior).expand(-1, -1, self.cfg.channels - 1, -1, -1), prior], 2)
        return self.decode_views(x0)[:, :, -1]

    def view_prior(self, reference_x0: torch.Tensor) -> torch.Tensor:
        """reference_x0 [B,C,S,S] (model space) -> [B,V,1,S,S] each view's retrieved mean alpha, in model space."""
        if not bool(self.view_prior_bank[:, 0].any()):
            raise ValueError("view prior: the bank is empty (all zero): train with a train_list (the trainer "
                             "fills it) or load a checkpoint that holds one")
        prior = nearest_views(self.view_prior_bank, (reference_x0[:, 3] + 1) / 2, self.cfg.view_prior_k,
                              self.view_prior_mirror)
        S = reference_x0.shape[-1]
        prior = F.interpolate(prior, size=(S, S), mode="bilinear", align_corners=False)  # [B,V,S,S]
        return (prior * 2 - 1)[:, :, None]

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def image_size(self) -> int:
        """Side of the views read and returned (the frame; the UNet works on its central cfg.image_size²)."""
        return self.cfg.frame

    def encode_views(self, images: torch.Tensor) -> torch.Tensor:
        """RGBA [B,V,4,H,W] in [0,1] -> x0 [B,V,4,S,S] in model space: resized to the frame, central S² crop."""
        B, V = images.shape[:2]
        x = resize_rgba(images.flatten(0, 1).float(), self.cfg.frame)  # straight RGBA: premultiplied resize
        o, S = self.cfg.crop_offset, self.cfg.image_size
        return to_model_pixels(x[..., o:o + S, o:o + S]).view(B, V, -1, S, S)

    def decode_views(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [B,V,4,S,S] -> RGBA [B,V,4,F,F] in [0,1], F the frame: the crop in its centre, background around
        (white RGB, alpha 0; the model space's own background)."""
        x = from_model_pixels(x0)
        o = self.cfg.crop_offset
        if o == 0:
            return x
        frame = torch.ones(*x.shape[:-2], self.cfg.frame, self.cfg.frame, dtype=x.dtype, device=x.device)
        frame[..., 3, :, :] = 0
        frame[..., o:o + x.shape[-2], o:o + x.shape[-1]] = x
        return frame

    def condition(self, reference: torch.Tensor, drop_reference: torch.Tensor | None = None,
                  drop_clip: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """reference RGBA [B,4,H,W] in [0,1]; drop_reference [B] bool zeroes it (the null condition of CFG).
        The pixel model has no CLIP embedding and draws no noise: drop_clip, generator, noise are unused."""
        ref = self.encode_views(reference[:, None])[:, 0]
        cond = {"reference": ref}
        if self.cfg.view_prior_mice:
            cond["view_prior"] = self.view_prior(ref)
        if drop_reference is not None:
            keep = (~drop_reference).to(ref.dtype)
            cond = {k: v * keep.view(-1, *[1] * (v.dim() - 1)) for k, v in cond.items()}
        return cond

    def null_condition(self, cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The dropped-reference condition (as in training's condition dropout): every entry zero."""
        return {k: torch.zeros_like(v) for k, v in cond.items()}

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        B, V = x_t.shape[:2]
        ref = cond["reference"][:, None].expand(-1, V, -1, -1, -1)
        parts = [x_t, ref]
        if self.cfg.view_rays:
            parts.append(self.view_ray_maps.to(x_t.dtype)[None].expand(B, -1, -1, -1, -1))
        if self.cfg.view_prior_mice:
            parts.append(cond["view_prior"].to(x_t.dtype))
        inp = torch.cat(parts, 2).flatten(0, 1)
        ctx = self.view_embedding().to(x_t.dtype)[None].expand(B, -1, -1, -1).flatten(0, 1)
        labels = torch.arange(V, device=x_t.device).repeat(B) if self.cfg.view_class_embedding else None
        out = self.unet(inp, t.repeat_interleave(V), encoder_hidden_states=ctx, class_labels=labels).sample
        return out.view(B, V, *out.shape[1:])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# --- FaceLift's latent model --------------------------------------------------------------------------------
class LatentMVDiffusion(nn.Module):
    """FaceLift-layout multi-view model on the components of a local diffusers folder.

    unet: stock UNet2DConditionModel (in_channels 8) with multi-view attn1; vae, image_encoder frozen.
    Conditioning (as FaceLift): VAE latent of the reference concatenated to each noisy latent on channels;
    CLIP image embedding (noised to `noise_level` with image_normalizer + image_noising_scheduler, with an
    independent noise row per view) plus its noise-level embedding as `class_labels` [B,V,2D]; per-view
    embeddings [V,77,1024] as cross-attention context. The null condition of CFG and of training's condition
    dropout is FaceLift's: a zero reference latent and an all-zero class label (level embedding included).
    Generated RGB is on white; alpha = pixels farther than `alpha_threshold` from white (the VAE has no alpha).
    """

    kind = "latent"

    def __init__(self, unet: nn.Module, vae: nn.Module, image_encoder: nn.Module, feature_extractor: Any,
                 image_normalizer: nn.Module, image_noising_scheduler: Any, num_views: int = 6,
                 view_embeddings: torch.Tensor | None = None, noise_level: int = 0, alpha_threshold: float = 0.04,
                 learn_view_embeddings: bool = False, source: str = "") -> None:
        super().__init__()
        self.unet, self.vae, self.image_encoder, self.image_normalizer = unet, vae, image_encoder, image_normalizer
        self.feature_extractor, self.image_noising_scheduler = feature_extractor, image_noising_scheduler
        self.num_views, self.noise_level, self.alpha_threshold = num_views, noise_level, alpha_threshold
        self.source = source
        self.learn_view_embeddings = learn_view_embeddings
        for m in (self.vae, self.image_encoder, self.image_normalizer):
            m.requires_grad_(False)
        self.register_buffer("view_embeddings", None)
        if view_embeddings is not None:
            self.set_view_embeddings(view_embeddings)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)

    def set_view_embeddings(self, emb: torch.Tensor | str | Path) -> None:
        """Per-view cross-attention embeddings [V,L,cross_attention_dim] (tensor or file)."""
        if not torch.is_tensor(emb):
            emb = load_view_embeddings(emb, self.num_views)
        want = self.unet.config.cross_attention_dim
        if emb.ndim != 3 or emb.shape[0] != self.num_views or emb.shape[-1] != want:
            raise ValueError(f"view embeddings must be [{self.num_views},L,{want}], got {tuple(emb.shape)}")
        emb = emb.detach().float().to(next(self.unet.parameters()).device)
        # learned: new per-view embeddings for new cameras (FaceLift's describe horizontal human views),
        # initialised from the given ones and trained with the UNet
        self.view_embeddings = nn.Parameter(emb) if self.learn_view_embeddings else emb

    def config_dict(self) -> dict[str, Any]:
        return {"source": self.source, "num_views": self.num_views, "noise_level": self.noise_level,
                "mv_attention": multiview_attention_mode(self.unet)[1],
                "learn_view_embeddings": self.learn_view_embeddings}

    @property
    def image_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale

    def encode_views(self, images: torch.Tensor) -> torch.Tensor:
        """RGBA [B,V,4,H,W] in [0,1] -> latents [B,V,4,h,w] (RGB composited on white, VAE mode, scaled)."""
        B, V = images.shape[:2]
        x = resize_rgba(images.flatten(0, 1).float(), self.image_size)  # straight RGBA: premultiplied resize
        rgb = to_model_pixels(x)[:, :3].to(self.vae.dtype)
        lat = self.vae.encode(rgb).latent_dist.mode() * self.vae.config.scaling_factor
        return lat.view(B, V, *lat.shape[1:]).float()

    def decode_views(self, x0: torch.Tensor) -> torch.Tensor:
        """latents [B,V,4,h,w] -> RGBA [B,V,4,H,W] in [0,1], alpha from distance to the white background."""
        B, V = x0.shape[:2]
        rgb = self.vae.decode(x0.flatten(0, 1).to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        rgb = ((rgb.float() + 1) / 2).clamp(0, 1)
        alpha = ((1 - rgb).amax(1, keepdim=True) > self.alpha_threshold).float()
        return torch.cat([rgb, alpha], 1).view(B, V, 4, *rgb.shape[-2:])

    def clip_embedding(self, reference: torch.Tensor) -> torch.Tensor:
        """reference RGBA [B,4,H,W] in [0,1] -> CLIP image embeds [B,D].

        As FaceLift: RGB composited on white, quantised to 8 bits, then the pipeline's own
        `CLIPImageProcessor` (resize, centre crop, normalise); the encoder runs on the model's device.
        """
        rgb = to_model_pixels(reference.float())[:, :3] * 0.5 + 0.5
        pixels8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        pixel_values = self.feature_extractor(images=list(pixels8), return_tensors="pt").pixel_values
        enc = self.image_encoder(pixel_values=pixel_values.to(reference.device, self.image_encoder.dtype))
        return enc.image_embeds.float()

    def noised_image_embedding(self, embeds: torch.Tensor, generator: torch.Generator | None = None,
                               noise: torch.Tensor | None = None) -> torch.Tensor:
        """unCLIP noise augmentation at `noise_level`, one noise row per view, as FaceLift:
        embeds [B,D] -> class_labels [B,V,2D] = [unscale(√ᾱ scale(e) + √(1-ᾱ) n_v), level embedding].

        noise [B,V,D]: the noise to use (e.g. recorded from FaceLift); None draws it from `generator`
        on the CPU ([B,V,D] in one draw: for B=1 the same numbers as FaceLift's [V,D] draw).
        """
        from diffusers.models.embeddings import get_timestep_embedding

        B, D = embeds.shape
        V = self.num_views
        if noise is None:
            noise = torch.randn((B, V, D), generator=generator, device="cpu")
        if tuple(noise.shape) != (B, V, D):
            raise ValueError(f"noised_image_embedding: noise must be [B,V,D] = {[B, V, D]} (one row per view), "
                             f"got {list(noise.shape)}")
        noise = noise.to(embeds)
        level = torch.full((B * V,), self.noise_level, device=embeds.device, dtype=torch.long)
        x = self.image_normalizer.scale(embeds[:, None].expand(B, V, D).reshape(B * V, D))
        x = self.image_noising_scheduler.add_noise(x, timesteps=level, noise=noise.reshape(B * V, D))
        x = self.image_normalizer.unscale(x)
        lvl = get_timestep_embedding(level, D, flip_sin_to_cos=True, downscale_freq_shift=0).to(x)
        return torch.cat([x, lvl], 1).view(B, V, 2 * D)

    def condition(self, reference: torch.Tensor, drop_reference: torch.Tensor | None = None,
                  drop_clip: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """reference RGBA [B,4,H,W] in [0,1] -> {"reference": latent [B,4,h,w], "class_labels": [B,V,2D]}.

        drop_reference / drop_clip [B] bool: FaceLift's condition dropout, each part on its own; a dropped
        part is its null value (zero latent; the whole class label zero, level embedding included).
        noise [B,V,D]: the embedding noise (see `noised_image_embedding`); None draws it from `generator`.
        """
        ref_lat = self.encode_views(reference[:, None])[:, 0]
        labels = self.noised_image_embedding(self.clip_embedding(reference), generator, noise)
        if drop_reference is not None:
            ref_lat = ref_lat * (~drop_reference).to(ref_lat)[:, None, None, None]
        if drop_clip is not None:
            labels = labels * (~drop_clip).to(labels)[:, None, None]
        return {"reference": ref_lat, "class_labels": labels}

    def null_condition(self, cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """FaceLift's null condition: zero reference latent and an all-zero class label [B,V,2D]."""
        return {"reference": torch.zeros_like(cond["reference"]),
                "class_labels": torch.zeros_like(cond["class_labels"])}

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.view_embeddings is None:
            raise RuntimeError("LatentMVDiffusion has no per-view embeddings; call set_view_embeddings(path) "
                               "(FaceLift's are facelift_reference/prompt_embeds/clr_embeds.pt)")
        B, V = x_t.shape[:2]
        dtype = self.unet.dtype
        ref = cond["reference"][:, None].expand(-1, V, -1, -1, -1)
        inp = torch.cat([x_t, ref], 2).flatten(0, 1).to(dtype)
        ctx = self.view_embeddings.to(dtype)[None].expand(B, -1, -1, -1).flatten(0, 1)
        labels = cond["class_labels"].flatten(0, 1).to(dtype)  # [B*V,2D]: one class label per view
        out = self.unet(inp, t.repeat_interleave(V), encoder_hidden_states=ctx, class_labels=labels).sample
        return out.float().view(B, V, *out.shape[1:])

    def trainable_parameters(self) -> list[nn.Parameter]:
        extra = [self.view_embeddings] if isinstance(self.view_embeddings, nn.Parameter) else []
        return [p for p in self.unet.parameters() if p.requires_grad] + extra
