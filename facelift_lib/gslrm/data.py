"""FaceLift samples as GS-LRM training/evaluation items, square-resized with intrinsics scaled.

An item is a dict:
  images [V,4,S,S] float32 in [0,1]: RGB composited over the dataset's background, alpha in channel 3
  K [V,3,3] float32 intrinsics for S x S pixels, w2c [V,4,4] float32 (OpenCV), name (sample folder name)
The view order is the sample's own (fixed): the first `num_input_views` are the model's inputs, the
rest are held out (see `protocol.split_views`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch.utils.data import Dataset

from ..cameras import Cameras
from ..images import SAMPLE_BACKGROUNDS, background_rgb, on_background, resize_rgba
from ..io import load_sample, read_list_file, validate_dataset


def resize_views(rgba: torch.Tensor, cams: Cameras, size: int, background: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stored RGBA [V,4,H,W] (straight alpha) -> (images [V,4,S,S] composited, K [V,3,3], w2c [V,4,4]).

    Resizes premultiplied (`images.resize_rgba`: edges do not pick up the colour stored under alpha 0),
    then composites over `background` [3]. The cameras are rescaled with the images (`Cameras.scaled_to`,
    exact for pixel centres at +0.5).
    """
    images = on_background(resize_rgba(rgba, size), background)
    return images.float(), cams.scaled_to(size, size).K.float(), cams.w2c.float()


class ViewsDataset(Dataset):
    """FaceLift sample folders (a list file or folders) -> items as in the module doc.

    num_views: views per sample to use (the first ones; None = all, and every sample must then have
    the same count). validate: run `io.validate_sample` on every sample first (errors list them all).
    cache: keep the resized items in memory (small datasets, repeated epochs).
    """

    def __init__(self, samples: str | Path | Iterable[str | Path], image_size: int, num_views: int | None = 6,
                 background: str = "white", validate: bool = True, cache: bool = True):
        if isinstance(samples, (str, Path)):
            self.source = str(samples)
            self.dirs = read_list_file(samples)
        else:
            self.dirs = [Path(d) for d in samples]
            self.source = f"{len(self.dirs)} sample folders"
        if not self.dirs:
            raise ValueError(f"ViewsDataset: no samples in {self.source}")
        if validate:
            validate_dataset(self.dirs, raise_on_error=True)
        self.image_size, self.num_views = int(image_size), num_views
        if background not in SAMPLE_BACKGROUNDS:
            raise ValueError(f"ViewsDataset: background must be one of {SAMPLE_BACKGROUNDS}, got {background!r}")
        self.background_name = background
        self.background = background_rgb(background)
        self.cache = {} if cache else None

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, i: int) -> dict:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        rgba, cams = load_sample(self.dirs[i], background=None)
        if self.num_views is not None:
            if len(cams) < self.num_views:
                raise ValueError(f"{self.dirs[i]}: {len(cams)} views, the dataset needs {self.num_views}")
            rgba, cams = rgba[: self.num_views], cams[list(range(self.num_views))]
        images, K, w2c = resize_views(rgba, cams, self.image_size, self.background)
        item = dict(images=images, K=K, w2c=w2c, name=self.dirs[i].name)
        if self.cache is not None:
            self.cache[i] = item
        return item


def collate(items: Sequence[dict]) -> dict:
    """Stack items of equal view count and size into a batch (names stay a list)."""
    out = {k: torch.stack([it[k] for it in items]) for k in ("images", "K", "w2c")}
    out["name"] = [it["name"] for it in items]
    return out


def write_toy_dataset(out_dir: str | Path, n_samples: int = 4, size: int = 32, seed: int = 0,
                      n_gaussians: int = 2000, mm_per_unit: float = 60.0) -> tuple[Path, list[Path]]:
    """A tiny FaceLift-format dataset of the procedural mouse, for tests and benchmarks (seconds on CPU).

    Poses from `mouse.mouse_trajectory` (every 3rd frame), each centred on its trunk and scaled mm ->
    FaceLift units by 1/mm_per_unit, rendered (facelift_lib.render) into `mouse_standard_6view` at
    size x size, saved with io.save_sample. Writes out_dir/sample_XXX/ and out_dir/all.txt; returns
    (list file, sample folders). Not a substitute for preprocessing real rig frames (notebook 02).
    """
    from ..cameras import mouse_standard_6view
    from ..io import save_sample, write_list_file
    from ..render import render_gaussians
    from ..mouse import body_center, mouse_gaussians_with_parts, mouse_trajectory

    out_dir = Path(out_dir)
    cams = mouse_standard_6view()
    poses = mouse_trajectory(3 * n_samples, seed=seed)[::3]
    dirs = []
    for i, pose in enumerate(poses):
        g, part = mouse_gaussians_with_parts(pose, n=n_gaussians, seed=seed)
        g = g.transformed(1.0 / mm_per_unit, -body_center(g, part).float())
        rgb, alpha, _ = render_gaussians(g, cams, None, size, size)
        rgba = torch.cat([rgb / alpha.clamp(min=1e-6), alpha], -1).clamp(0, 1).permute(0, 3, 1, 2)
        # not the 512² standard spec any more
        small = cams.scaled_to(size, size).replace(meta={"camera_distance": 2.7})
        dirs.append(save_sample(out_dir / f"sample_{i:03d}", rgba, small))
    return write_list_file(out_dir / "all.txt", dirs), dirs
