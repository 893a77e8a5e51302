"""Image metrics with one fixed, labelled protocol, and `evaluate` for any gaussian predictor.

Every number says where it was measured: `*_full` over the whole image, `*_masked` over the target
mask (target alpha > 0.5 for IoU; alpha-weighted for PSNR/SSIM). Mixing the two is how numbers
get withdrawn, so no metric here has an unlabelled name.

- PSNR (data range 1): full via torchmetrics; masked = 10 log10(1 / MSE over mask pixels and 3 channels).
- SSIM: torchmetrics' gaussian-window SSIM map (11 px, sigma 1.5); full = map mean, masked = alpha-weighted
  map mean.
- Mask IoU: rendered alpha > 0.5 vs target alpha > 0.5.
- LPIPS: torchmetrics (VGG), only with local backbone weights (nothing is downloaded); full image only.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from tqdm import tqdm

from .gaussians import Gaussians
from .protocol import EvalProtocol, split_views
from .render import render

METRIC_COLUMNS = ("psnr_full", "psnr_masked", "ssim_full", "ssim_masked", "mask_iou")
LPIPS_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


# --- per-image metrics (inputs [N,3,H,W] in [0,1], alpha/mask [N,1,H,W]) --------------------------
def psnr_full(pred: Tensor, target: Tensor) -> Tensor:
    """[N] PSNR over the whole image."""
    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def psnr_masked(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """[N] PSNR over the pixels weighted by mask [N,1,H,W] (NaN where the mask is empty)."""
    w = mask.expand_as(pred)
    mse = ((pred - target) ** 2 * w).sum((1, 2, 3)) / w.sum((1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-12))


def ssim_map(pred: Tensor, target: Tensor) -> Tensor:
    """[N,3,H,W] SSIM map (torchmetrics, gaussian window 11 px, sigma 1.5, data range 1); differentiable."""
    _, full = structural_similarity_index_measure(pred, target, data_range=1.0, return_full_image=True,
                                                  reduction="none")
    return full


def ssim_full(pred: Tensor, target: Tensor) -> Tensor:
    return ssim_map(pred, target).mean((1, 2, 3))


def ssim_masked(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """[N] SSIM map averaged with weights mask [N,1,H,W] (NaN where the mask is empty)."""
    w = mask.expand_as(pred)
    return (ssim_map(pred, target) * w).sum((1, 2, 3)) / w.sum((1, 2, 3))


def mask_iou(pred_alpha: Tensor, target_alpha: Tensor, threshold: float = 0.5) -> Tensor:
    """[N] IoU of (rendered alpha > threshold) and (target alpha > threshold), alphas [N,...].

    The workbook's one Mask IoU (metrics, grading's `mask_consistency`). When both masks are empty the IoU
    is NaN, not 1: there is nothing to compare, and a perfect score for "no mouse in either" would lift a mean
    over views; averages skip it (pandas' mean, np.nanmean), so report how many views were counted."""
    p, t = pred_alpha > threshold, target_alpha > threshold
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return inter / union.where(union > 0, torch.nan)


# --- LPIPS ----------------------------------------------------------------------------------------
@contextmanager
def _torch_hub_dir(path: Path) -> Iterator[None]:
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub.set_dir(old)


def make_lpips(weights_dir: str | Path | None, net: str = "vgg") -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS (torchmetrics) from LOCAL backbone weights -> fn(pred, target) -> [N].

    weights_dir: a torch-hub folder holding checkpoints/<torchvision backbone file> (vgg:
    vgg16-397923af.pth, alex: alexnet-owt-7be5be79.pth). Nothing can be downloaded here, so a
    missing folder/file, or missing torchvision, is an error that says so.
    """
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"LPIPS: net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    if weights_dir is None:
        raise ValueError("LPIPS needs local weights and none were given (nothing can be downloaded here): pass "
                         f"a torch-hub folder with checkpoints/{LPIPS_BACKBONE_FILES[net]}, or leave LPIPS out "
                         "(lpips weight 0)")
    weights_dir = Path(weights_dir)
    backbone = weights_dir / "checkpoints" / LPIPS_BACKBONE_FILES[net]
    if not backbone.is_file():
        raise FileNotFoundError(f"LPIPS backbone weights not found: {backbone} (copy torchvision's "
                                f"{LPIPS_BACKBONE_FILES[net]} there; it cannot be downloaded here)")
    try:
        import torchvision  # noqa: F401  (torchmetrics' LPIPS builds its backbone with torchvision)
    except ImportError as e:
        raise ImportError("LPIPS needs torchvision: .venv/bin/pip install -c constraints.txt torchvision") from e
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    with _torch_hub_dir(weights_dir):
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True, reduction="mean").eval()
    net_module = metric.net

    def lpips(pred: Tensor, target: Tensor) -> Tensor:
        net_module.to(pred.device)
        return net_module(pred, target, normalize=True).flatten()

    return lpips


# --- image set metrics ------------------------------------------------------------------------------
def image_metrics(pred_rgb: Tensor, pred_alpha: Tensor, target_rgb: Tensor, target_alpha: Tensor,
                  lpips: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """All labelled metrics per image: inputs [N,3,H,W] / [N,1,H,W] -> {name: [N]}."""
    pred_rgb = pred_rgb.clamp(0, 1).float()
    target_rgb, target_alpha = target_rgb.float(), target_alpha.float()
    out = {
        "psnr_full": psnr_full(pred_rgb, target_rgb),
        "psnr_masked": psnr_masked(pred_rgb, target_rgb, target_alpha),
        "ssim_full": ssim_full(pred_rgb, target_rgb),
        "ssim_masked": ssim_masked(pred_rgb, target_rgb, target_alpha),
        "mask_iou": mask_iou(pred_alpha, target_alpha),
    }
    if lpips is not None:
        out["lpips_full"] = lpips(pred_rgb, target_rgb)
    return out


# --- rendering predictions ----------------------------------------------------------------------------
def render_views(g: Gaussians, K: Tensor, w2c: Tensor, size: int, background: Tensor) -> tuple[Tensor, Tensor]:
    """Unbatched gaussians into cameras K [C,3,3] / w2c [C,4,4] (pixels of size x size) ->
    (rgb [C,3,S,S], alpha [C,1,S,S]); differentiable (facelift_lib.render)."""
    dev, dt = g.means.device, g.means.dtype
    rgb, alpha, _ = render(g.means, g.quats, g.scales, g.opacities, g.colors, w2c.to(dev, dt), K.to(dev, dt),
                           size, size, background=background.to(dev, dt))
    return rgb.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2)


def background_only(images: Tensor, cams) -> Gaussians:
    """Baseline predictor 'empty render': one fully transparent gaussian per sample, so every render is
    the background. Same call signature as GSLRM: images [B,V,3,H,W] -> Gaussians [B,1,...]."""
    B, dev = images.shape[0], images.device
    return Gaussians(means=torch.zeros(B, 1, 3, device=dev), quats=torch.tensor([1.0, 0, 0, 0], device=dev).repeat(B, 1, 1),
                     scales=torch.full((B, 1, 3), 1e-3, device=dev), opacities=torch.zeros(B, 1, device=dev),
                     colors=torch.zeros(B, 1, 3, device=dev))


@torch.no_grad()
def predict_and_render(model: Callable, item: dict, input_views: Sequence[int], eval_views: Sequence[int],
                       device: torch.device | str = "cpu") -> tuple[Gaussians, Tensor, Tensor]:
    """Run a predictor on one dataset item's input views and render its eval views.

    Returns (gaussians (unbatched), rgb [E,3,S,S], alpha [E,1,S,S])."""
    images, K, w2c = item["images"].to(device), item["K"].to(device), item["w2c"].to(device)
    S = images.shape[-1]
    inp = list(input_views)
    g = model(images[None, inp, :3], (K[None, inp], w2c[None, inp]))[0].to(torch.float32)
    bg = item.get("background", None)
    bg = torch.ones(3) if bg is None else bg
    rgb, alpha = render_views(g, K[list(eval_views)], w2c[list(eval_views)], S, bg.to(device))
    return g, rgb, alpha


@torch.no_grad()
def evaluate(model: Callable, dataset, views: str = "held_out", num_input_views: int = 5,
             device: torch.device | str | None = None, lpips_weights: str | Path | None = None,
             max_samples: int | None = None, progress: bool = True, split: str | None = None,
             mask_source: str | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Evaluate a predictor on a `gslrm.data.ViewsDataset`-like dataset.

    model: GSLRM or any callable (images [B,V,3,H,W], (K, w2c)) -> Gaussians (e.g. `background_only`).
    views: "held_out" (views after the first `num_input_views`), "input" or "all".
    Images are compared at the dataset's resolution over its background. Returns (per-sample
    DataFrame: sample, n_views and the labelled metrics averaged over that sample's evaluated views;
    means over samples as a dict, plus "n_samples" and "views"). With `split` ("val", "train", ...) and
    `mask_source` (where the dataset's alpha came from) named, the means also hold "protocol": the
    `protocol.EvalProtocol` of what was scored (samples, input/scored views, background, resolution).
    """

    if device is None:
        device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    lpips = make_lpips(lpips_weights) if lpips_weights is not None else None
    background = getattr(dataset, "background", torch.ones(3))
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    rows, scored = [], None
    try:
        for i in tqdm(range(n), desc=f"evaluate ({views} views)", disable=not progress, leave=False):
            item = dict(dataset[i], background=background)
            V = item["images"].shape[0]
            inp, ev = split_views(V, num_input_views, views)
            if split is not None and scored not in (None, (inp, ev)):
                raise ValueError(f"evaluate: sample {item['name']} has {V} views, earlier samples another count; "
                                 "one protocol needs the same views in every sample (ViewsDataset(num_views=...))")
            scored = (inp, ev)
            _, rgb, alpha = predict_and_render(model, item, inp, ev, device)
            target = item["images"][ev].to(device)
            m = image_metrics(rgb, alpha, target[:, :3], target[:, 3:4], lpips)
            rows.append({"sample": item["name"], "n_views": len(ev), **{k: float(v.mean()) for k, v in m.items()}})
    finally:
        if was_training:
            model.train()
    table = pd.DataFrame(rows)
    means = {k: float(table[k].mean()) for k in table.columns if k not in ("sample", "n_views")}
    means.update(n_samples=len(table), views=views)
    if split is not None or mask_source is not None:
        if split is None or mask_source is None:
            raise ValueError("evaluate: name both split and mask_source for the protocol, or neither")
        background_name = getattr(dataset, "background_name", None) or ",".join(f"{c:g}" for c in background.tolist())
        means["protocol"] = EvalProtocol(split=split, samples=table["sample"].tolist(), input_views=scored[0],
                                         scored_views=scored[1], mask_source=mask_source, background=background_name,
                                         resolution=int(item["images"].shape[-1]))
    return table, means
