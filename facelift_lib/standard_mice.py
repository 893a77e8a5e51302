"""Many distinct procedural mice at the standard cameras: GS-LRM (and diffusion-target) data at scale.

One mouse per seed. The seed fixes everything about it: a pose drawn from `mouse.mouse_trajectory` (walking,
turning, rearing, bent spine, head and tail), its fur colour, its size (lab-mouse range), the gaussian sample
of its body and a few mm of centring error (preprocessing centres on the masks, not on the true trunk).
Splits draw from disjoint seed ranges (`SPLIT_SEED_BASE`), so a test mouse is never a training mouse, and
`test_seed` style offsets give fresh mice nobody has seen.

The mouse is written in the workbook's standard-sample world: trunk centroid at the origin, Z up, FaceLift
units with the rig's scale (`rig_mm_per_unit`: the virtual rig's camera distance maps to FaceLift's 2.7, as
`preprocess.preprocess_rig` normalises real frames), rendered (`render.render_gaussians`) at
`cameras.standard_cameras(camera_type, size)`, straight RGBA, saved with `io.save_sample`.

Cache: `out_dir/<split>/mouse_<seed:07d>/` plus a list file per range, `out_dir/<split>_<first>-<last>.txt`
(e.g. `train_0-1199.txt`), so evaluating a few mice of a cache never rewrites the list a recipe trains on.
A sample whose JSON records the same generator settings is kept (not re-rendered); one recorded with other
settings is an error naming it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .cameras import MOUSE_STANDARD_CAMERAS, Cameras, standard_cameras
from .gaussians import Gaussians
from .images import straight_alpha
from .io import save_sample, write_list_file
from .mouse import FUR_COLORS, MousePose, body_center, mouse_gaussians_with_parts, mouse_trajectory

SPLIT_SEED_BASE = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SEEDS_PER_SPLIT = 1_000_000
GENERATOR_VERSION = 1  # bump when what a seed renders changes: cached samples of another version are refused


@dataclass(frozen=True)
class MouseDataConfig:
    """What a seed renders, apart from the seed (recorded in every sample's JSON under "standard_mouse").

    size: image side (px) of the standard cameras. n_gaussians: gaussians of the procedural mouse.
    scale_range: body size factor (1 = adult C57BL/6), uniform. max_frame: the pose is frame
    [0, max_frame) of the seed's trajectory. centre_jitter_mm: uniform centring error per axis.
    """

    size: int = 64
    camera_type: str = MOUSE_STANDARD_CAMERAS
    n_gaussians: int = 4000
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_frame: int = 80
    centre_jitter_mm: float = 4.0
    mm_per_unit: float | None = None  # None: rig_mm_per_unit()

    @property
    def cache_folder(self) -> str:
        """Sub-folder of a mice cache root these mice live in: `<size>` at the standard cameras, `<size>_<camera_type>`
        at any other set (`outputs/mice/64`, `outputs/mice/64_mouse_rig_6view`), so two camera sets never share one."""
        return str(self.size) if self.camera_type == MOUSE_STANDARD_CAMERAS else f"{self.size}_{self.camera_type}"

    def resolved(self) -> dict:
        d = dataclasses.asdict(self)
        d["scale_range"] = list(self.scale_range)
        d["mm_per_unit"] = float(self.mm_per_unit or rig_mm_per_unit())
        d["version"] = GENERATOR_VERSION
        return d


def rig_mm_per_unit() -> float:
    """Rig millimetres per FaceLift unit: the virtual rig's mean camera distance to its target / 2.7."""
    from .cameras import FACELIFT_DISTANCE
    from .synthetic_rig import RIG_TARGET_MM, markerless_mouse_rig

    d = (markerless_mouse_rig().centers - torch.tensor(RIG_TARGET_MM, dtype=torch.float64)).norm(dim=-1)
    return float(d.mean()) / FACELIFT_DISTANCE


def mouse_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """Seeds of mice start..start+n-1 of a split (disjoint ranges per split; see SPLIT_SEED_BASE)."""
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f"split must be one of {list(SPLIT_SEED_BASE)}, got {split!r}")
    if start < 0 or n < 0 or start + n > SEEDS_PER_SPLIT:
        raise ValueError(f"mouse_seeds({split!r}): start {start} + n {n} leaves the split's range of "
                         f"{SEEDS_PER_SPLIT} seeds (it would reach another split's mice)")
    return [SPLIT_SEED_BASE[split] + start + i for i in range(n)]


def mice_list_name(split: str, n: int, start: int = 0) -> str:
    """The list file name of mice start..start+n-1 of a split: '<split>_<start>-<start+n-1>.txt'."""
    return f"{split}_{start}-{start + n - 1}.txt"


def split_of_seed(seed: int) -> str:
    """The split a mouse seed belongs to."""
    for split, base in SPLIT_SEED_BASE.items():
        if base <= seed < base + SEEDS_PER_SPLIT:
            return split
    raise ValueError(f"seed {seed} is in no split's range {SPLIT_SEED_BASE} (+{SEEDS_PER_SPLIT})")


def random_mouse(seed: int, cfg: MouseDataConfig = MouseDataConfig()) -> tuple[MousePose, torch.Tensor]:
    """(pose, centring error [3] mm) of mouse `seed`: a frame of its own trajectory, fur and size drawn too."""
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    u = torch.rand(4, generator=gen, dtype=torch.float64)
    frame = int(u[0] * cfg.max_frame)
    fur = sorted(FUR_COLORS)[int(u[1] * len(FUR_COLORS))]
    lo, hi = cfg.scale_range
    scale = lo + (hi - lo) * float(u[2])
    pose = mouse_trajectory(frame + 1, seed=seed, fur=fur, scale=scale)[frame]
    jitter = (torch.rand(3, generator=gen, dtype=torch.float64) * 2 - 1) * cfg.centre_jitter_mm
    return pose, jitter


def mouse_in_sample_world(seed: int, cfg: MouseDataConfig = MouseDataConfig()) -> tuple[Gaussians, float]:
    """(gaussians of mouse `seed` in its sample's world, FaceLift units per mm): trunk centroid (+ centring
    error) at the origin, scaled mm -> units. This is the ground truth of the sample `render_mice` writes."""
    pose, jitter = random_mouse(seed, cfg)
    g, part = mouse_gaussians_with_parts(pose, n=cfg.n_gaussians, seed=seed)
    units_per_mm = 1.0 / float(cfg.resolved()["mm_per_unit"])
    centre = body_center(g, part) + jitter
    return g.transformed(units_per_mm, -centre.float()), units_per_mm


def render_mouse(seed: int, cfg: MouseDataConfig, cams: Cameras) -> torch.Tensor:
    """Straight RGBA [V,4,S,S] of mouse `seed` at `cams`."""
    from .render import render_gaussians

    g, _ = mouse_in_sample_world(seed, cfg)
    rgb, alpha, _ = render_gaussians(g, cams, background=torch.zeros(3))
    return straight_alpha(rgb.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2))


def _recorded_settings(sample_dir: Path) -> dict | None:
    f = sample_dir / "opencv_cameras.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text()).get("standard_mouse")


@dataclass
class MiceResult:
    list_file: Path
    dirs: list[Path]
    rendered: int       # samples rendered by this call (the rest came from the cache)
    seconds: float      # wall time of this call


def render_mice(out_dir: str | Path, split: str, n: int, cfg: MouseDataConfig = MouseDataConfig(), start: int = 0,
                progress: bool = True) -> MiceResult:
    """Mice start..start+n-1 of `split` -> out_dir/<split>/mouse_<seed>/ (cached) + their list file,
    out_dir/`mice_list_name(split, n, start)` (one per range: other ranges' lists are never rewritten).

    Samples already on disk with the same settings are kept; a folder holding another generator's sample
    (other size, gaussians, version ...) is an error naming it (use another out_dir, or delete the folder).
    """
    if n < 1:
        raise ValueError(f"render_mice({split!r}): n must be >= 1, got {n}")
    out_dir = Path(out_dir)
    settings = cfg.resolved()
    cams = standard_cameras(cfg.camera_type, cfg.size)
    t0, rendered, dirs = time.perf_counter(), 0, []
    for seed in tqdm(mouse_seeds(split, n, start), desc=f"mice ({split})", disable=not progress, leave=False):
        d = out_dir / split / f"mouse_{seed:07d}"
        recorded = _recorded_settings(d)
        if recorded is not None:
            want = {**settings, "seed": seed}
            if recorded != want:
                diff = {k: (recorded.get(k), v) for k, v in want.items() if recorded.get(k) != v}
                raise ValueError(f"{d} holds a mouse rendered with other settings (on disk vs now: {diff}); "
                                 "use another out_dir, or delete that folder to re-render it")
            dirs.append(d)
            continue
        pose, _ = random_mouse(seed, cfg)
        meta = {**cams.meta, "standard_mouse": {**settings, "seed": seed}, "split": split,
                "pose": dataclasses.asdict(pose), "reference_view": 0,
                "views_from": f"procedural mouse (standard_mice.render_mice) rendered at {cfg.camera_type}"}
        dirs.append(save_sample(d, render_mouse(seed, cfg, cams), cams.replace(meta=meta)))
        rendered += 1
    list_file = write_list_file(out_dir / mice_list_name(split, n, start), dirs)
    return MiceResult(list_file=list_file, dirs=dirs, rendered=rendered, seconds=time.perf_counter() - t0)


def sample_mouse_ground_truth(sample_dir: str | Path) -> tuple[Gaussians, float]:
    """(ground-truth gaussians in the sample's world, FaceLift units per mm) of a `render_mice` sample,
    regenerated from the settings recorded in its JSON."""
    settings = _recorded_settings(Path(sample_dir))
    if settings is None:
        raise ValueError(f"{Path(sample_dir) / 'opencv_cameras.json'} has no 'standard_mouse' settings: not a sample "
                         "written by standard_mice.render_mice")
    if settings.get("version") != GENERATOR_VERSION:
        raise ValueError(f"{sample_dir} was rendered by generator version {settings.get('version')}, this library "
                         f"renders version {GENERATOR_VERSION}; re-render it with render_mice")
    fields = {f.name for f in dataclasses.fields(MouseDataConfig)}
    cfg = MouseDataConfig(**{k: (tuple(v) if k == "scale_range" else v) for k, v in settings.items() if k in fields})
    return mouse_in_sample_world(int(settings["seed"]), cfg)


def main(argv: list[str] | None = None) -> None:
    """`python -m facelift_lib.standard_mice OUT_DIR --train N --val N --test N [--size S]`: render (or find
    cached) mice 0..N-1 of each split and print the rendering cost."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--size", type=int, default=MouseDataConfig.size)
    ap.add_argument("--n-gaussians", type=int, default=MouseDataConfig.n_gaussians)
    ap.add_argument("--camera-type", default=MouseDataConfig.camera_type,
                    help="a cameras.standard_cameras spec, e.g. mouse_rig_6view (the rig's directions)")
    for split in SPLIT_SEED_BASE:
        ap.add_argument(f"--{split}", type=int, default=0, help=f"number of {split} mice")
    args = ap.parse_args(argv)
    cfg = MouseDataConfig(size=args.size, n_gaussians=args.n_gaussians, camera_type=args.camera_type)
    for split in SPLIT_SEED_BASE:
        n = getattr(args, split)
        if n:
            r = render_mice(args.out_dir, split, n, cfg)
            per = f"{r.seconds / r.rendered:.3f} s per rendered mouse" if r.rendered else "all cached"
            print(f"{split}: {n} mice in {r.list_file} ({r.rendered} rendered, {r.seconds:.1f} s, {per})")


if __name__ == "__main__":
    main()
