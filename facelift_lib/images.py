"""The library's image conventions in one place: named backgrounds, compositing, straight alpha, resizing.

Images are float tensors in [0,1], `[...,C,H,W]`. RGBA carries *straight* (not premultiplied) alpha in
channel 3, and RGB under alpha 0 carries nothing (written samples store 0 there, as FaceLift's do). Two
kinds of RGBA travel through the library:
- straight RGBA (a sample as stored, `io.load_sample(..., background=None)`; a render after
  `straight_alpha`): resize it with `resize_rgba` (premultiplied), composite it with `composite` /
  `on_background` / `on_white`;
- RGBA whose RGB is already composited over a background (the models' convention: RGB on white, alpha
  beside it; generated views): every channel is then linear in the pixels, so `resize_images` resizes it
  channel by channel (compositing and resizing commute).
Resizing straight RGBA channel by channel would blend the RGB = 0 under alpha 0 into the edge pixels and
darken them once composited (`tests/test_images.py` measures it); `resize_rgba` resizes RGB·alpha and alpha,
then divides by alpha where alpha > 0.
Reading and writing files stays in io.py; rescaling the cameras with an image is `Cameras.scaled_to`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# The one registry of named backgrounds: white as FaceLift (the models' convention), black, and the grey
# of FaceLift's random fine-tuning backgrounds.
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5)}
# What samples are read and measured over (`io.load_sample`, the GS-LRM dataset, `EvalProtocol.background`);
# grey is only a training augmentation (mvdiffusion.train.random_backgrounds).
SAMPLE_BACKGROUNDS = ("white", "black")


def background_rgb(name: str) -> torch.Tensor:
    """[3] float32 colour of a named background (a key of `BACKGROUNDS`)."""
    if name not in BACKGROUNDS:
        raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}, got {name!r}")
    return torch.tensor(BACKGROUNDS[name])


def _background_like(background: str | torch.Tensor, rgba: torch.Tensor) -> torch.Tensor:
    """A background (name, [3] colour, or [B,3] one colour per leading item) shaped to broadcast over
    rgba [...,3,H,W]: [3,1,1] or [B,1..,3,1,1]."""
    bg = background_rgb(background) if isinstance(background, str) else torch.as_tensor(background)
    bg = bg.to(device=rgba.device, dtype=rgba.dtype)
    if bg.ndim == 1 and bg.shape[0] == 3:
        return bg.view(3, 1, 1)
    if bg.ndim == 2 and bg.shape == (rgba.shape[0], 3) and rgba.ndim >= 4:
        return bg.view(bg.shape[0], *([1] * (rgba.ndim - 4)), 3, 1, 1)
    raise ValueError(f"background must be a name, a [3] colour or [B,3] colours for B = {rgba.shape[0]} "
                     f"images, got shape {tuple(bg.shape)}")


def composite(rgba: torch.Tensor, background: str | torch.Tensor) -> torch.Tensor:
    """Straight RGBA [...,4,H,W] over a background -> RGB [...,3,H,W] = rgb·a + bg·(1 - a).

    background: a name of `BACKGROUNDS`, a [3] colour, or [B,3] one colour per item of the leading dim B."""
    if rgba.shape[-3] != 4:
        raise ValueError(f"composite: expected RGBA [...,4,H,W], got {tuple(rgba.shape)}")
    a = rgba[..., 3:4, :, :]
    return rgba[..., :3, :, :] * a + _background_like(background, rgba) * (1 - a)


def on_background(rgba: torch.Tensor, background: str | torch.Tensor) -> torch.Tensor:
    """Straight RGBA [...,4,H,W] -> RGBA with RGB composited over `background` (as `composite`), alpha kept."""
    return torch.cat([composite(rgba, background), rgba[..., 3:4, :, :]], -3)


def on_white(rgba: torch.Tensor) -> torch.Tensor:
    """Straight RGBA [...,4,H,W] -> RGBA with RGB composited on white (the models' image convention)."""
    return on_background(rgba, "white")


def straight_alpha(rgb_premultiplied: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Rendered (premultiplied, black background) rgb [...,3,H,W] + alpha [...,1,H,W] -> straight RGBA."""
    rgb = torch.where(alpha > 1e-4, rgb_premultiplied / alpha.clamp(min=1e-4), torch.zeros_like(rgb_premultiplied))
    return torch.cat([rgb.clamp(0, 1), alpha.clamp(0, 1)], -3)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N,C,H,W] -> [N,C,size,size], every channel on its own (antialiased bilinear, clamped to [0,1];
    unchanged when already that size). For RGB, masks, and RGBA already composited over a background;
    straight RGBA goes through `resize_rgba`."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def resize_rgba(rgba: torch.Tensor, size: int) -> torch.Tensor:
    """Straight RGBA [N,4,H,W] -> straight RGBA [N,4,size,size], resized premultiplied: RGB·alpha and alpha
    are resized (`resize_images`), then RGB = (RGB·alpha) / alpha where alpha > 0 and 0 elsewhere. So an
    edge pixel keeps the object's colour instead of picking up the colour stored under alpha 0 (0 in
    written samples: a straight resize darkens edges). Unchanged when already that size."""
    if rgba.ndim != 4 or rgba.shape[1] != 4:
        raise ValueError(f"resize_rgba: expected straight RGBA [N,4,H,W], got {tuple(rgba.shape)}")
    if rgba.shape[-2:] == (size, size):
        return rgba
    a = rgba[:, 3:4]
    small = resize_images(torch.cat([rgba[:, :3] * a, a], 1), size)
    a = small[:, 3:4]
    rgb = torch.where(a > 0, small[:, :3] / a.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(small[:, :3]))
    return torch.cat([rgb.clamp(0, 1), a], 1)
