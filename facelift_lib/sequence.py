"""4D: a rig sequence -> per-frame GS-LRM gaussians, held-out-camera scores, behaviour readouts, files.

    cfg = SequenceConfig(rig_dir=..., out_dir=".../sequence", checkpoint=".../gslrm/run")
    run_sequence(cfg, workers=2)          # streaming, resumable, sharded by frame range
    result = finish_sequence(cfg)         # CSV, manifest, video, summary tables (reads the per-frame files)

Per frame (`process_frame`; nothing of other frames is held, so memory does not grow with the sequence):
  1. preprocessing: the rig frame's images + masks -> FaceLift sample in memory (`rig.read_rig_frame`,
     `preprocess_frame`, the method and size GS-LRM was trained on), resized to the model's size over white;
  2. held-out camera: GS-LRM reads the 5 other cameras, renders camera h = frame mod 6 (rotating with the
     frame), scored against that camera's preprocessed view (masked PSNR / SSIM, Mask IoU; the mask is the
     rig mask carried through preprocessing);
  3. reconstruction: GS-LRM reads all 6 cameras (as at inference); the gaussians go back from the sample's
     FaceLift units to rig mm with its stored normalisation (x_rig = x_facelift / scale - translation),
     are cleaned with 05's export filters and written as frame PLY;
  4. readouts (`behaviour.frame_readouts`) of those gaussians and, on a synthetic rig (gt/), of the true ones;
  5. a video panel: an input view | the held-out camera's target | GS-LRM's render there | a view turning
     around the mouse.
Each frame's files are written to temporary names and renamed, the frame JSON last: a frame counts as done
when its JSON exists, so an interrupted run resumes where it stopped and keeps nothing half-written.

Output folder (`SequenceConfig.out_dir`):
  config.json                 what the frames were made with (a resume with another config is an error)
  frames/frame_XXXXXX.json    per frame: held-out camera and metrics, readouts, true readouts, file names
  ply/frame_XXXXXX.ply        gaussians in rig mm (world Z up), 05's export filters applied
  panels/frame_XXXXXX.png     the video frame
  readouts.csv, manifest.json (frame -> PLY, timestamp), sequence.mp4 (or .gif)   by `finish_sequence`
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .behaviour import (CENTROID, READOUT_COLUMNS, ReadoutConfig, circular_std_deg, cloud_step, frame_readouts,
                        fix_heading_sign, jitter, readout_errors, smooth_readouts)
from .cameras import FACELIFT_DISTANCE, FACELIFT_FOCAL, orbit_cameras
from .gaussians import Gaussians, load_ply, save_ply
from .gslrm.data import resize_views
from .gslrm.export import ExportFilters, filter_gaussians
from .gslrm.model import GSLRM
from .gslrm.train import load_trained_model
from .training import checkpoint_file
from .images import background_rgb
from .io import write_image
from .metrics import image_metrics, render_views
from .preprocess import preprocess_frame, variant_config
from .protocol import EvalProtocol
from .rig import Rig, RigError, has_ground_truth, load_centers, load_ground_truth, load_rig, read_rig_frame

FRAME_NAME = "frame_{:06d}"
DEFAULT_FPS = 10.0  # the synthetic rig's motion is ~0.1 s per frame (mouse.MotionParams); rig.json "fps" wins


@dataclass(frozen=True)
class SequenceConfig:
    """Everything the per-frame outputs depend on (stored as out_dir/config.json).

    rig_dir: a rig folder (DESIGN.md layout; synthetic or real). out_dir: the sequence output folder.
    checkpoint: a GS-LRM checkpoint file or run folder (`gslrm.train.load_trained_model`; its newest checkpoint).
    frames: rig frame ids to process (None: all of rig.json's). method / preprocess_size: the preprocessing
      GS-LRM was trained on (02's variant and written size; the views are then resized to the model's size).
    readout: `behaviour.ReadoutConfig`. export: 05's `ExportFilters` (FaceLift units) for the PLYs and readouts.
    fps: frame rate for timestamps when rig.json has no "fps". panel_size: video tile side (px).
    turn_frames: frames per full turn of the turning view. threads: torch threads per worker (1 makes a run
      bit-identical whatever the number of workers). device: "auto" (CUDA if available), "cpu", "cuda", ...
    on_error: a frame whose rig files are bad (missing, undecodable, an empty mask: RigError / PreprocessError)
      stops the run ("raise", naming the frame) or is recorded as skipped with its error and left out of the
      tables ("skip"; listed in the manifest and counted in the summary).
    """

    rig_dir: str
    out_dir: str
    checkpoint: str
    frames: tuple[int, ...] | None = None
    method: str = "standard_camera"
    preprocess_size: int = 128
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    export: ExportFilters = field(default_factory=ExportFilters)
    fps: float = DEFAULT_FPS
    panel_size: int = 96
    turn_frames: int = 48
    turn_elevation_deg: float = 20.0
    threads: int = 1
    device: str = "auto"
    on_error: str = "raise"

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"SequenceConfig: on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["frames"] = None if self.frames is None else list(self.frames)
        ckpt = resolve_checkpoint(self.checkpoint)
        d["checkpoint_file"], d["checkpoint_sha256"] = str(ckpt), file_digest(ckpt)
        return json.loads(json.dumps(d))  # tuples -> lists, as the JSON holds them

    def torch_device(self) -> torch.device:
        """"auto": CUDA when available, else CPU (CPU runs are bit-identical whatever the number of workers)."""
        return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device)


@lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file (cached while its mtime and size stay): a retrained checkpoint under the same name
    is another model, and a resume must not mix its frames with the old model's."""
    st = path.stat()
    return _digest(str(path), st.st_mtime_ns, st.st_size)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's newest ckpt_*.pt (`training.checkpoint_file`); a missing one names
    the notebook that writes it."""
    return checkpoint_file(path, "notebook 05_gslrm (it trains one into <out_dir>/gslrm/run)")


def frame_name(frame: int) -> str:
    return FRAME_NAME.format(int(frame))


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _remove_temp_files(out: Path) -> list[Path]:
    """Leftovers of an interrupted write (ours: .NAME.PID.tmp, save_ply's NAME.tmp, io's temp files)."""
    stale = [p for sub in ("frames", "ply", "panels") for p in (out / sub).glob("*tmp*") if p.is_file()]
    for p in stale:
        p.unlink()
    return stale


# --- one frame -------------------------------------------------------------------------------------------
@dataclass
class FrameContext:
    """What every frame of a run shares: the rig, the model, the configs (built once per worker)."""

    cfg: SequenceConfig
    rig: Rig
    model: GSLRM
    has_gt: bool
    background: torch.Tensor
    device: torch.device


def make_context(cfg: SequenceConfig) -> FrameContext:
    rig = load_rig(cfg.rig_dir)
    device = cfg.torch_device()
    model = load_trained_model(resolve_checkpoint(cfg.checkpoint)).eval().to(device)
    return FrameContext(cfg=cfg, rig=rig, model=model, has_gt=has_ground_truth(rig),
                        background=background_rgb("white").to(device), device=device)


def held_out_camera(frame: int, n_views: int) -> int:
    """The camera scored at this frame: frame mod n_views, so every camera is held out in turn."""
    return int(frame) % n_views


def to_rig_mm(g: Gaussians, normalization: dict) -> Gaussians:
    """Gaussians in a sample's FaceLift units -> rig mm (x_rig = x_facelift / scale - translation)."""
    scale = float(normalization["scale"])
    translation = torch.as_tensor(normalization["translation"], dtype=g.means.dtype)
    return g.transformed(1.0 / scale, -scale * translation)


@torch.no_grad()
def turning_view(g: Gaussians, frame: int, cfg: SequenceConfig, background: torch.Tensor) -> torch.Tensor:
    """[3,S,S] render of FaceLift-unit gaussians (mouse at the origin) from an orbit camera whose azimuth turns
    360° every `turn_frames` frames, at `turn_elevation_deg`."""
    S = cfg.panel_size
    az = 360.0 * (int(frame) % cfg.turn_frames) / cfg.turn_frames
    cams = orbit_cameras([az], cfg.turn_elevation_deg, distance=FACELIFT_DISTANCE, fx=FACELIFT_FOCAL * S / 512,
                         width=S)
    rgb, _ = render_views(g.to(torch.float32), cams.K.float(), cams.w2c.float(), S, background.to(g.means.device))
    return rgb[0].clamp(0, 1)


def _tile(img: torch.Tensor, size: int) -> torch.Tensor:
    """[3,h,w] -> [3,size,size] (nearest for upscaling: the model's pixels stay visible)."""
    if img.shape[-1] == size:
        return img
    mode = "nearest" if img.shape[-1] < size else "area"
    return F.interpolate(img[None], size=(size, size), mode=mode)[0]


class _Laps:
    """Wall seconds per stage, added into `into` (None: not timed); CUDA work is synchronised before each read."""

    def __init__(self, into: dict[str, float] | None, device: torch.device):
        self.into, self.cuda, self.t = into, device.type == "cuda", time.perf_counter()

    def __call__(self, stage: str) -> None:
        if self.into is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.t
        self.t = now


@torch.no_grad()
def process_frame(ctx: FrameContext, frame: int, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """One rig frame -> its files (PLY, panel) and its record (returned and written as frames/<name>.json, last).
    timings: a dict to add the wall seconds of each stage to (benchmarks/bench_sequence.py); not in the record."""
    cfg, model, bg = ctx.cfg, ctx.model, ctx.background
    lap = _Laps(timings, ctx.device)
    out, name = Path(cfg.out_dir), frame_name(frame)
    pcfg = variant_config(cfg.method, size=cfg.preprocess_size, workers=1)
    rgba, cams = preprocess_frame(read_rig_frame(ctx.rig, frame), pcfg)
    rgba_t = torch.from_numpy(rgba).permute(0, 3, 1, 2).float() / 255.0
    S = model.config.image_size
    images, K, w2c = (x.to(ctx.device) for x in resize_views(rgba_t, cams, S, bg.cpu()))  # [V,4,S,S] on white
    lap("read + preprocess")
    V = len(images)
    h = held_out_camera(frame, V)
    inputs = [v for v in range(V) if v != h]
    g5 = model(images[None, inputs, :3], (K[None, inputs], w2c[None, inputs]))[0].to(torch.float32)
    lap("GS-LRM (5 views)")
    rgb_h, alpha_h = render_views(g5, K[[h]], w2c[[h]], S, bg)
    m = {k: float(v[0]) for k, v in image_metrics(rgb_h, alpha_h, images[[h], :3], images[[h], 3:4]).items()}
    true_m: dict[str, float] = {}
    gt = load_ground_truth(ctx.rig.dir, frame) if ctx.has_gt else None
    if gt is not None:  # the ceiling of this protocol: the true mouse, rendered the same way, against the same view
        norm_t = torch.as_tensor(cams.meta["normalization"]["translation"], dtype=torch.float32)
        g_true = gt.transformed(float(cams.meta["normalization"]["scale"]), norm_t).to(ctx.device)
        rgb_t, alpha_t = render_views(g_true, K[[h]], w2c[[h]], S, bg)
        true_m = {f"true_heldout_{k}": float(v[0])
                  for k, v in image_metrics(rgb_t, alpha_t, images[[h], :3], images[[h], 3:4]).items()}
    lap("render + score held-out")
    g6 = model(images[None, :, :3], (K[None], w2c[None]))[0].to(torch.float32)
    lap("GS-LRM (6 views)")
    kept, filtered = filter_gaussians(g6, cfg.export)
    norm = cams.meta["normalization"]
    g_mm = to_rig_mm(kept, norm)
    ply = save_ply(g_mm, out / "ply" / f"{name}.ply")
    kept = kept.to(ctx.device)
    readouts = frame_readouts(g_mm.means, g_mm.opacities, cfg.readout)
    truth = None if gt is None else frame_readouts(gt.means, gt.opacities, cfg.readout)
    lap("filter + PLY + readouts")
    first_input = inputs[0]
    panel = torch.cat([_tile(images[first_input, :3], cfg.panel_size), _tile(images[h, :3], cfg.panel_size),
                       _tile(rgb_h[0].clamp(0, 1), cfg.panel_size), turning_view(kept, frame, cfg, bg)], 2).cpu()
    panel_path = write_image(out / "panels" / f"{name}.png", panel)
    names = ctx.rig.names
    record = {"frame": int(frame), "timestamp_s": frame_timestamp(ctx.rig, frame, cfg.fps),
              "held_out_view": h, "held_out_camera": names[h], "input_cameras": [names[v] for v in inputs],
              "panel_input_camera": names[first_input], **{f"heldout_{k}": v for k, v in m.items()}, **true_m,
              "readouts": readouts, "truth": truth, "n_gaussians_predicted": int(len(g6)),
              "n_gaussians_kept": int(len(kept)), "filters": filtered,
              "ply": ply.relative_to(out).as_posix(), "panel": panel_path.relative_to(out).as_posix(),
              "normalization": {"scale": float(norm["scale"]), "translation": list(norm["translation"])}}
    _atomic_json(out / "frames" / f"{name}.json", record)
    lap("panel + JSON")
    return record


def frame_timestamp(rig: Rig, frame: int, fps: float) -> float:
    """Seconds since frame 0: rig.json "fps" if it has one, else `fps`."""
    return round(int(frame) / float(rig.meta.get("fps", fps)), 6)


# --- the loop -----------------------------------------------------------------------------------------------
@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def prepare_output(cfg: SequenceConfig) -> Path:
    """Create out_dir and its config.json, or check that an existing one matches (a resume must not mix two
    configurations' frames); temporary leftovers of an interrupted run are removed."""
    out = Path(cfg.out_dir)
    for sub in ("frames", "ply", "panels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    path, now = out / "config.json", cfg.to_dict()
    if path.is_file():
        before = json.loads(path.read_text())
        differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if differ:
            raise ValueError(f"{path}: this folder holds frames made with another configuration (differs in "
                             f"{differ}); delete {out} to start over, or choose another out_dir")
    else:
        _atomic_json(path, now)
    _remove_temp_files(out)
    return out


def clear_outputs(cfg: SequenceConfig) -> None:
    """Delete what this module writes in out_dir (config, frames, PLYs, panels, tables, video) for a fresh run;
    anything else there (e.g. the synthetic rig) stays."""
    out = Path(cfg.out_dir)
    for sub in ("frames", "ply", "panels"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for name in ("config.json", "manifest.json", "readouts.csv", "sequence.mp4", "sequence.gif"):
        (out / name).unlink(missing_ok=True)


def sequence_frames(cfg: SequenceConfig) -> list[int]:
    rig_frames = load_rig(cfg.rig_dir).frames
    if cfg.frames is None:
        return rig_frames
    unknown = sorted(set(cfg.frames) - set(rig_frames))
    if unknown:
        raise ValueError(f"{Path(cfg.rig_dir) / 'rig.json'}: frames {unknown[:10]} are not in this rig")
    return [int(f) for f in cfg.frames]


def done_frames(cfg: SequenceConfig) -> set[int]:
    """Frames whose JSON exists (written last, so their PLY and panel are complete)."""
    return {int(p.stem.split("_")[1]) for p in (Path(cfg.out_dir) / "frames").glob("frame_*.json")}


def process_frames(cfg: SequenceConfig, frames: Sequence[int], progress: bool = False) -> int:
    """Process `frames` one after the other (skipping done ones) in this process -> how many were processed."""
    todo = [f for f in frames if f not in done_frames(cfg)]
    if not todo:
        return 0
    with torch_threads(cfg.threads):
        ctx = make_context(cfg)
        for f in tqdm(todo, desc="sequence frames", disable=not progress):
            try:
                process_frame(ctx, f)
            except RigError as e:  # PreprocessError included: bad input files of this frame, named in e
                if cfg.on_error == "raise":
                    raise RigError(f"sequence frame {f}: {e} (or run with on_error='skip' to leave such frames "
                                   "out)") from e
                _atomic_json(Path(cfg.out_dir) / "frames" / f"{frame_name(f)}.json",
                             {"frame": int(f), "timestamp_s": frame_timestamp(ctx.rig, f, cfg.fps),
                              "error": f"{type(e).__name__}: {e}"})
    return len(todo)


def shard(frames: Sequence[int], workers: int) -> list[list[int]]:
    """Contiguous frame ranges, one per worker, sizes differing by at most one (empty ones dropped)."""
    n, k = len(frames), max(1, int(workers))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [list(frames[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _worker(cfg_dict: dict, frames: list[int]) -> None:
    process_frames(config_from_dict(cfg_dict), frames)


def config_from_dict(d: dict) -> SequenceConfig:
    """Inverse of `SequenceConfig.to_dict` (nested configs rebuilt, derived keys dropped)."""
    d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(SequenceConfig)}}
    exp = dict(d.get("export", {}))
    if exp.get("crop_box") is not None:
        exp["crop_box"] = tuple(tuple(x) for x in exp["crop_box"])
    ro = dict(d.get("readout", {}))
    if "length_quantiles" in ro:
        ro["length_quantiles"] = tuple(ro["length_quantiles"])
    return SequenceConfig(**{**d, "frames": None if d.get("frames") is None else tuple(d["frames"]),
                             "readout": ReadoutConfig(**ro), "export": ExportFilters(**exp)})


@dataclass
class RunStats:
    frames: int          # frames of the sequence
    processed: int       # processed by this call (the others were done already)
    seconds: float       # wall time of this call
    workers: int

    @property
    def fps(self) -> float:
        """Frames per second of this call's loop (processed frames / wall time, start-up included)."""
        return self.processed / self.seconds if self.seconds > 0 else float("nan")


def run_sequence(cfg: SequenceConfig, workers: int = 1, progress: bool = True) -> RunStats:
    """Every frame of the sequence not done yet -> its files. workers > 1: contiguous frame ranges in that many
    spawned processes (each loads the model once), one progress bar counting finished frames; same files as
    one worker. Returns what this call did (for frames per second)."""
    t0 = time.perf_counter()
    prepare_output(cfg)
    frames = sequence_frames(cfg)
    done = done_frames(cfg)
    todo = [f for f in frames if f not in done]
    if workers <= 1 or len(todo) <= 1:
        processed = process_frames(cfg, todo, progress=progress)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(cfg.to_dict(), part)) for part in shard(todo, workers)]
        for p in procs:
            p.start()
        with tqdm(total=len(todo), desc=f"sequence frames ({len(procs)} workers)", disable=not progress) as bar:
            while any(p.is_alive() for p in procs):
                time.sleep(0.5)
                bar.update(len(done_frames(cfg) - done) - bar.n)
            bar.update(len(done_frames(cfg) - done) - bar.n)
        failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"sequence workers {failed} failed (exit codes {[procs[i].exitcode for i in failed]}); "
                               f"their finished frames are kept in {cfg.out_dir}: rerun to resume")
        processed = len(done_frames(cfg) - done)
    return RunStats(frames=len(frames), processed=processed, seconds=time.perf_counter() - t0, workers=workers)


# --- after the loop: tables and files ----------------------------------------------------------------------
def read_frame_records(cfg: SequenceConfig) -> list[dict]:
    """The per-frame JSONs of the sequence, in frame order; a missing frame is an error naming it."""
    out = Path(cfg.out_dir)
    frames = sequence_frames(cfg)
    missing = [f for f in frames if not (out / "frames" / f"{frame_name(f)}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{out / 'frames'}: frames {missing[:10]} ({len(missing)} in all) are not done; "
                                "run run_sequence(cfg) first (it resumes)")
    return [json.loads((out / "frames" / f"{frame_name(f)}.json").read_text()) for f in frames]


def readout_table(records: list[dict], key: str = "readouts") -> pd.DataFrame:
    """[frames x (frame, timestamp_s, readouts)] from the frame records (`key` "readouts" or "truth")."""
    rows = [{"frame": r["frame"], "timestamp_s": r["timestamp_s"], **r[key]} for r in records]
    return pd.DataFrame(rows).set_index("frame")


def heldout_table(records: list[dict]) -> pd.DataFrame:
    """Per frame: the held-out camera, GS-LRM's scores there and, on a synthetic rig, the true gaussians' scores
    (true_heldout_*: rendered and compared the same way, the ceiling of the protocol at this resolution)."""
    cols = ["held_out_camera", "heldout_psnr_masked", "heldout_ssim_masked", "heldout_mask_iou", "heldout_psnr_full"]
    cols += [f"true_{c}" for c in cols[1:] if f"true_{c}" in records[0]]
    return pd.DataFrame([{"frame": r["frame"], **{c: r[c] for c in cols}} for r in records]).set_index("frame")


def mask_centres(records: list[dict]) -> pd.DataFrame:
    """Per frame, the mouse centre preprocessing found without any model (rays through the 6 mask centroids,
    least squares; the sample normalisation's centre) as centroid_{x,y,z}_mm: the baseline for the centroid."""
    c = np.array([[-float(x) for x in r["normalization"]["translation"]] for r in records])
    return pd.DataFrame({"frame": [r["frame"] for r in records], CENTROID[0]: c[:, 0], CENTROID[1]: c[:, 1],
                         CENTROID[2]: c[:, 2]}).set_index("frame")


def trunk_truth(rig: Rig, frames: Sequence[int]) -> pd.DataFrame | None:
    """The generator's body centre of a synthetic rig (the mean of the trunk gaussians, gt/centers.json) per frame,
    as trunk_{x,y,z}_mm; None for a rig without gt/centers.json (a real rig)."""
    if not has_ground_truth(rig):
        return None
    c = load_centers(rig.dir).numpy()[list(frames)]
    return pd.DataFrame({"frame": list(frames), "trunk_x_mm": c[:, 0], "trunk_y_mm": c[:, 1],
                         "trunk_z_mm": c[:, 2]}).set_index("frame")


def cloud_steps(cfg: SequenceConfig, records: list[dict], max_points: int = 3000) -> pd.DataFrame:
    """Per consecutive frame pair: how far the predicted cloud moved (`behaviour.cloud_step`, mm, centres with
    opacity >= readout.min_opacity, at most max_points of them, evenly strided) and, on a synthetic rig, how far
    the true cloud moved. Two frames in memory at a time."""
    out = Path(cfg.out_dir)
    rig = load_rig(cfg.rig_dir)

    def cloud(g: Gaussians) -> torch.Tensor:
        pts = g.means[g.opacities >= cfg.readout.min_opacity]
        return pts[:: max(1, math.ceil(len(pts) / max_points))]

    rows, prev, prev_gt, prev_frame = [], None, None, None
    for r in records:
        cur = cloud(load_ply(out / r["ply"]))
        cur_gt = cloud(load_ground_truth(rig.dir, r["frame"])) if r["truth"] is not None else None
        if prev is not None and r["frame"] == prev_frame + 1:
            row = {"frame": r["frame"], "cloud_step_mm": cloud_step(prev, cur)}
            if cur_gt is not None and prev_gt is not None:
                row["true_cloud_step_mm"] = cloud_step(prev_gt, cur_gt)
            rows.append(row)
        prev, prev_gt, prev_frame = cur, cur_gt, r["frame"]
    return pd.DataFrame(rows).set_index("frame") if rows else pd.DataFrame()


def write_manifest(cfg: SequenceConfig, records: list[dict], skipped: Sequence[dict] = ()) -> Path:
    out = Path(cfg.out_dir)
    rig = load_rig(cfg.rig_dir)
    manifest = {"rig_dir": str(cfg.rig_dir), "units": "mm", "world": "rig world, Z up, floor z = 0",
                "fps": float(rig.meta.get("fps", cfg.fps)), "checkpoint": cfg.to_dict()["checkpoint_file"],
                "frames": [{"frame": r["frame"], "timestamp_s": r["timestamp_s"], "ply": r["ply"],
                            "n_gaussians": r["n_gaussians_kept"]} for r in records],
                "skipped": [{"frame": r["frame"], "timestamp_s": r["timestamp_s"], "error": r["error"]} for r in skipped]}
    path = out / "manifest.json"
    _atomic_json(path, manifest)
    return path


def write_video(cfg: SequenceConfig, records: list[dict], fmt: str = "mp4") -> Path:
    """The panels as a video, one frame at a time (streaming): MP4 (H.264 through imageio's ffmpeg plugin,
    imageio-ffmpeg) or GIF. fmt="mp4" without imageio-ffmpeg installed is an error that says how to install it
    or to ask for fmt="gif"."""
    import imageio.v2 as imageio

    from .io import read_image

    out = Path(cfg.out_dir)
    fps = float(load_rig(cfg.rig_dir).meta.get("fps", cfg.fps))
    if fmt == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise ImportError("write_video(fmt='mp4') needs imageio-ffmpeg: .venv/bin/pip install -c constraints.txt "
                              "imageio-ffmpeg, or pass fmt='gif'") from e
        kw = dict(fps=fps, codec="libx264", quality=8, macro_block_size=16, ffmpeg_log_level="error")
    elif fmt == "gif":
        kw = dict(duration=1000.0 / fps, loop=0)
    else:
        raise ValueError(f"write_video: fmt must be 'mp4' or 'gif', got {fmt!r}")
    path = out / f"sequence.{fmt}"
    tmp = out / f".sequence.{os.getpid()}.tmp.{fmt}"
    with imageio.get_writer(tmp, **kw) as writer:
        for r in records:
            img = read_image(out / r["panel"])[:3]
            writer.append_data((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    os.replace(tmp, path)
    return path


@dataclass
class SequenceResult:
    """The sequence as tables (one row per frame) and the files written by `finish_sequence`."""

    readouts: pd.DataFrame               # predicted readouts (heading sign by continuity), frame index
    smoothed: pd.DataFrame               # the same after `smooth_readouts`
    heldout: pd.DataFrame                # held-out camera and its metrics per frame
    truth: pd.DataFrame | None           # readouts of the true gaussians (synthetic rig)
    trunk: pd.DataFrame | None           # the generator's body (trunk) centre (synthetic rig)
    clouds: pd.DataFrame                 # cloud_step_mm (and true_cloud_step_mm) per frame pair
    files: dict[str, Path]
    protocols: dict[str, EvalProtocol]   # how each summary number was measured
    summary: dict[str, float]            # the headline numbers (see `finish_sequence`)


def sequence_protocols(records: list[dict], cfg: SequenceConfig, model_size: int) -> dict[str, EvalProtocol]:
    """How the sequence's numbers are measured (`protocol.EvalProtocol`), by kind:
    "heldout": every camera is scored at the frames where it is held out (frame mod 6), GS-LRM reading the other 5
    (the views fields list all 6; `extra` states the rotation); "readouts": 3D readouts of the gaussians from all
    6 cameras against the same readouts of the true gaussians; "baseline": the mask-ray centre, no GS-LRM."""
    views = tuple(range(len(records[0]["input_cameras"]) + 1))
    base = dict(split=f"sequence {Path(cfg.rig_dir).name}", samples=[frame_name(r["frame"]) for r in records],
                resolution=model_size)
    heldout = EvalProtocol(**base, input_views=views, scored_views=views, background="white",
                           mask_source=f"rig masks through preprocessing ({cfg.method}, {cfg.preprocess_size}²)",
                           extra={"held_out": "camera frame mod 6 scored, the other 5 read"})
    readouts = EvalProtocol(**base, input_views=views, scored_views=(), background="none (3D)",
                            mask_source="none (3D: vs the same readouts of the true gaussians, gt/frame_*.ply)",
                            extra={"min_opacity": cfg.readout.min_opacity})
    baseline = readouts.replace(extra={"centre": "rays through the 6 mask centroids (preprocessing), no GS-LRM"})
    return {"heldout": heldout, "readouts": readouts, "baseline": baseline}


def finish_sequence(cfg: SequenceConfig, smooth_window: int = 7, smooth_polyorder: int = 2, heading_sign: str = "motion",
                    min_step_mm: float = 1.0, write_files: bool = True, video_format: str = "mp4") -> SequenceResult:
    """Read the done frames -> tables, headline numbers with their protocols, and (write_files) readouts.csv,
    manifest.json and the video. Streaming: per-frame numbers only; PLYs and panels are read one or two at a time.

    heading_sign / min_step_mm: how the heading's sign is chosen (`behaviour.fix_heading_sign`), for the
    predicted and the true readouts alike. smooth_window / smooth_polyorder: `behaviour.smooth_readouts`."""
    everything = read_frame_records(cfg)
    skipped = [r for r in everything if "error" in r]
    records = [r for r in everything if "error" not in r]
    if not records:
        raise ValueError(f"{cfg.out_dir}: every frame was skipped (on_error='skip'); first error: {skipped[0]['error']}")
    frames = [r["frame"] for r in records]
    rig = load_rig(cfg.rig_dir)
    raw = readout_table(records)
    sign_kw = {"min_step_mm": min_step_mm} if heading_sign == "motion" else {}
    readouts = fix_heading_sign(raw, heading_sign, **sign_kw)
    smoothed = smooth_readouts(readouts, smooth_window, smooth_polyorder)
    heldout = heldout_table(records)
    has_truth = all(r["truth"] is not None for r in records)
    truth = None
    if has_truth:
        truth = fix_heading_sign(readout_table(records, "truth"), heading_sign, **sign_kw)
    trunk = trunk_truth(rig, frames)
    clouds = cloud_steps(cfg, records)
    model_size = int(torch.load(resolve_checkpoint(cfg.checkpoint), map_location="cpu", weights_only=True)
                     ["model_config"]["image_size"])
    kinds = sequence_protocols(records, cfg, model_size)
    s: dict[str, float] = {"heldout_psnr_masked": float(heldout["heldout_psnr_masked"].mean()),
                           "heldout_ssim_masked": float(heldout["heldout_ssim_masked"].mean()),
                           "heldout_mask_iou": float(heldout["heldout_mask_iou"].mean())}
    for k in ("psnr_masked", "mask_iou"):
        if f"true_heldout_{k}" in heldout:
            s[f"true_heldout_{k}"] = float(heldout[f"true_heldout_{k}"].mean())
    protocols = {k: kinds["heldout"] for k in s}
    s.update(jitter(readouts))
    s["heading_spread_deg"] = circular_std_deg(readouts["heading_deg"])
    s["frames_skipped"] = float(len(skipped))
    if truth is not None:
        err, err_s = readout_errors(readouts, truth), readout_errors(smoothed, truth)
        for k in ("centroid_err_mm", "heading_err_deg"):
            s[k], s[f"{k}_smoothed"] = float(err[k].mean()), float(err_s[k].mean())
        s["length_err_mm"] = float(err["length_err_mm"].abs().mean())
        s["height_err_mm"] = float(err["height_err_mm"].abs().mean())
        s["true_heading_spread_deg"] = circular_std_deg(truth["heading_deg"])
        for name, df in (("", readouts), ("_smoothed", smoothed)):
            s.update({f"{k}{name}": v for k, v in jitter(df, truth).items()})
        if len(clouds) and "true_cloud_step_mm" in clouds:
            s["cloud_jitter_mm"] = float(np.sqrt(np.mean((clouds["cloud_step_mm"] - clouds["true_cloud_step_mm"]) ** 2)))
        # baseline without GS-LRM: the mouse centre preprocessing triangulates from the mask centroids' rays
        base = mask_centres(records)
        s["baseline_centroid_err_mm"] = float(np.linalg.norm(base[CENTROID].to_numpy() - truth[CENTROID].to_numpy(),
                                                             axis=1).mean())
        s["baseline_centroid_jitter_mm"] = float(np.sqrt(np.mean(np.sum(
            (np.diff(base[CENTROID].to_numpy(), axis=0) - np.diff(truth[CENTROID].to_numpy(), axis=0)) ** 2, 1))))
        for k in s:
            protocols.setdefault(k, kinds["readouts"])
        for k in ("baseline_centroid_err_mm", "baseline_centroid_jitter_mm"):
            protocols[k] = kinds["baseline"]
    if trunk is not None:  # the estimator's own offset: opacity-weighted centroid of the whole mouse vs its trunk
        tc = trunk[["trunk_x_mm", "trunk_y_mm", "trunk_z_mm"]].to_numpy()
        s["centroid_err_vs_trunk_mm"] = float(np.linalg.norm(readouts[CENTROID].to_numpy() - tc, axis=1).mean())
        trunk_p = kinds["readouts"].replace(mask_source="none (3D: vs the generator's trunk centre, gt/centers.json)")
        protocols["centroid_err_vs_trunk_mm"] = trunk_p
        if truth is not None:
            s["truth_centroid_vs_trunk_mm"] = float(np.linalg.norm(truth[CENTROID].to_numpy() - tc, axis=1).mean())
            protocols["truth_centroid_vs_trunk_mm"] = trunk_p
    for k in s:  # without truth: RMS second differences of the readouts themselves
        protocols.setdefault(k, kinds["readouts"].replace(mask_source="none (3D, no truth)"))
    files: dict[str, Path] = {}
    if write_files:
        out = Path(cfg.out_dir)
        table = readouts.join(heldout).join(clouds, how="left")
        if truth is not None:
            table = table.join(truth[list(READOUT_COLUMNS)].add_prefix("true_"))
        csv = out / "readouts.csv"
        tmp = out / f".readouts.{os.getpid()}.tmp.csv"
        table.to_csv(tmp, float_format="%.4f")
        os.replace(tmp, csv)
        files = {"csv": csv, "manifest": write_manifest(cfg, records, skipped),
                 "video": write_video(cfg, records, video_format)}
    return SequenceResult(readouts=readouts, smoothed=smoothed, heldout=heldout, truth=truth, trunk=trunk,
                          clouds=clouds, files=files, protocols=protocols, summary=s)

